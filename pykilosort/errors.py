"""Exceptions raised by pykilosort.

Every error a user can cause derives from :class:`KilosortError`, so scripts can catch one type, and
each message names the problem and the fix.
"""


class KilosortError(Exception):
    """Base class of the errors that pykilosort raises on bad input or state."""


class ParameterError(KilosortError, ValueError):
    """An unknown, mistyped or out-of-range parameter."""


class ProbeError(KilosortError, ValueError):
    """A probe whose arrays are inconsistent or out of range."""


class RawDataError(KilosortError, ValueError):
    """A raw recording that cannot be read as declared (size, dtype, channel count, range)."""


class DeviceError(KilosortError, RuntimeError):
    """A requested compute device (e.g. CUDA) that is not available."""


class DataQualityError(KilosortError, ValueError):
    """Data that cannot be processed meaningfully (NaNs, all channels flat, too short)."""


class ContextError(KilosortError, RuntimeError):
    """A run folder or checkpoint that cannot be used."""


class SpikeCapacityError(KilosortError, RuntimeError):
    """More spikes in a batch than a kernel's capacity: raise the named capacity parameter."""
