"""The original Kilosort2 v2.0 mex kernels (a user's checkout), executed on the CPU.

``translate`` turns ``<checkout>/CUDA/mex*.cu`` into kernels-only CUDA text (no MATLAB or CUDA
runtime host code, line numbers kept), ``executor`` is the one place that imports the
CUDA-on-CPU executor and its stand-in CuPy, ``hosts`` and ``host_mpnu8`` replay each
mexFunction's host sequence in Python, and ``compare`` runs them against
``pykilosort.kernels.mex.call_mex``. No Kilosort source is stored here: the checkout is read at
run time.
"""
