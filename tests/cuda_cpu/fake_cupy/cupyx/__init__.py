"""Stand-in cupyx: the parts pykilosort uses, computed by scipy on host arrays."""
