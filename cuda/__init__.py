"""CUDA C sources of the kernels (shipped as package data; no host code here)."""
