"""pykilosort as a SpikeInterface sorter.

SpikeInterface 0.105 ships its own ``pykilosort`` wrapper, written for the IBL fork; it fails
before it reaches us (``_run_from_folder`` passes a misspelled ``file_paths_lenght`` to
``binary_compatible_with``). :class:`PyKilosortSorter` replaces it::

    from pykilosort.spikeinterface_sorter import register
    register()                                    # run_sorter("pykilosort", ...) now runs us
    sorting = spikeinterface.sorters.run_sorter("pykilosort", recording, folder="ks2_out",
                                                fshigh=300, Th=[10, 4])

``register()`` puts the class into SpikeInterface's sorter registry under ``"pykilosort"``,
replacing the broken wrapper in this process only (``register("pykilosort2")`` keeps it and adds
ours under that name). Worker processes have registries of their own; for
``run_sorter_jobs``::

    register(client=client)           # engine="dask": every worker of the client, now and later
    run_sorter_jobs(jobs, engine="dask", engine_kwargs={"client": client})
    run_sorter_jobs(jobs, engine="joblib",  # joblib's loky workers register as they start
                    engine_kwargs={"n_jobs": 2, "backend": joblib_backend()})

A recording that is not a flat binary file of a dtype we read (with no header) is first written
to ``sorter_output/recording.dat``. Results are the phy folder ``sorter_output/output``, read
back with SpikeInterface's own Kilosort reader.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    from spikeinterface.core import write_binary_recording
    from spikeinterface.sorters.basesorter import BaseSorter, get_job_kwargs
except ImportError as exc:  # pragma: no cover - spikeinterface is an optional dependency
    raise ImportError("pykilosort.spikeinterface_sorter needs spikeinterface "
                      "(pip install spikeinterface)") from exc

from . import __version__
from .params import PARAMS

__all__ = ["PyKilosortSorter", "register", "joblib_backend", "RegisterOnWorkers"]

_FROM_RECORDING = ("NchanTOT", "fs", "dtype")  # taken from the recording, not from the user
_READABLE = ("int16", "uint16", "int32", "float32", "float64")


def _defaults() -> dict:
    params = {name: (list(p.default) if isinstance(p.default, tuple) else p.default)
              for name, p in PARAMS.items() if name not in _FROM_RECORDING}
    params.update(device="auto", n_threads=None, keep_good_only=False)
    return params


def _descriptions() -> dict:
    out = {name: p.doc for name, p in PARAMS.items() if name not in _FROM_RECORDING}
    out.update(device="'auto' (CUDA if CuPy sees a GPU), 'cpu' or 'cuda'",
               n_threads="CPU threads for numba (None: all cores)",
               keep_good_only="return only the units Kilosort labels 'good'")
    return out


class PyKilosortSorter(BaseSorter):
    """Kilosort2 (and 2.5) in Python: pykilosort, on CUDA or on the CPU."""

    sorter_name = "pykilosort"
    requires_locations = True
    gpu_capability = "nvidia-optional"
    requires_binary_data = False
    compatible_with_parallel = {"loky": True, "multiprocessing": False, "threading": False}
    handle_multi_segment = False
    _default_params = _defaults()
    _params_description = _descriptions()
    sorter_description = ("pykilosort: a faithful Python port of Kilosort2/2.5 with CUDA kernels "
                          "and numba CPU twins")
    installation_mesg = "pip install pykilosort (and spikeinterface)"

    @classmethod
    def is_installed(cls):
        return True

    @classmethod
    def get_sorter_version(cls):
        return __version__

    @classmethod
    def _check_params(cls, recording, sorter_output_folder, params):
        from .params import resolve_params

        kernel = {k: v for k, v in params.items() if k in PARAMS}
        resolve_params(kernel)  # unknown or out-of-range values fail here, before any work
        return params

    @classmethod
    def _needs_copy(cls, recording) -> bool:
        if not recording.binary_compatible_with(time_axis=0, file_paths_length=1, file_offset=0):
            return True
        return str(np.dtype(recording.get_binary_description()["dtype"])) not in _READABLE

    @classmethod
    def _setup_recording(cls, recording, sorter_output_folder, params, verbose):
        if cls._needs_copy(recording):
            dtype = recording.get_dtype() if str(recording.get_dtype()) in _READABLE else "float32"
            write_binary_recording(recording, file_paths=[sorter_output_folder / "recording.dat"],
                                   dtype=dtype, **get_job_kwargs(params, verbose))

    @classmethod
    def _run_from_folder(cls, sorter_output_folder, params, verbose):
        from .main import run
        from .probes import Probe

        recording = cls.load_recording_from_folder(sorter_output_folder.parent, with_warnings=False)
        if cls._needs_copy(recording):
            dat_path = sorter_output_folder / "recording.dat"
            dtype = recording.get_dtype() if str(recording.get_dtype()) in _READABLE else "float32"
        else:
            d = recording.get_binary_description()
            dat_path, dtype = d["file_paths"][0], d["dtype"]
        n = recording.get_num_channels()
        loc = recording.get_channel_locations()
        groups = recording.get_channel_groups()
        probe = Probe(NchanTOT=n, chanMap=np.arange(n), xc=loc[:, 0], yc=loc[:, 1],
                      kcoords=np.zeros(n) if groups is None else np.asarray(groups))
        kw = {k: v for k, v in params.items() if k in PARAMS}
        run(dat_path, probe=probe, dir_path=sorter_output_folder,
            output_dir=sorter_output_folder / "output", device=params.get("device", "auto"),
            n_threads=params.get("n_threads"), fs=recording.get_sampling_frequency(),
            dtype=str(np.dtype(dtype)), **kw)

    @classmethod
    def _get_result_from_folder(cls, sorter_output_folder):
        import json

        from spikeinterface.extractors import read_kilosort

        sorter_output_folder = Path(sorter_output_folder)
        params_file = sorter_output_folder.parent / "spikeinterface_params.json"
        keep_good_only = json.loads(params_file.read_text())["sorter_params"].get(
            "keep_good_only", False)
        return read_kilosort(sorter_output_folder / "output", keep_good_only=keep_good_only)


def register(name: str = "pykilosort", *, client=None) -> type:
    """Make ``spikeinterface.sorters.run_sorter(name, ...)`` run pykilosort in this process, and
    with a Dask ``client`` in each of its workers too (a worker plugin: workers that start later,
    or restart, register as well)."""
    from spikeinterface.sorters import sorterlist

    if client is not None:
        client.register_plugin(RegisterOnWorkers(name))

    cls = PyKilosortSorter if name == PyKilosortSorter.sorter_name else type(
        "PyKilosortSorter_" + name, (PyKilosortSorter,), {"sorter_name": name})
    sorterlist.sorter_full_list[:] = [s for s in sorterlist.sorter_full_list
                                      if s.sorter_name != name] + [cls]
    sorterlist.sorter_dict[name] = cls
    return cls


def joblib_backend(name: str = "pykilosort", **kwargs):
    """joblib's loky backend whose worker processes register pykilosort as they start: pass it
    as ``engine_kwargs["backend"]`` of SpikeInterface's ``run_sorter_jobs(engine="joblib")``."""
    from joblib._parallel_backends import LokyBackend  # the class joblib's "loky" name stands for

    return LokyBackend(initializer=register, initargs=(name,), **kwargs)


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - distributed is optional
    _WorkerPlugin = object


class RegisterOnWorkers(_WorkerPlugin):
    """Dask worker plugin: :func:`register` in every worker (see ``register(client=...)``)."""

    def __init__(self, sorter_name: str = "pykilosort"):
        self.sorter_name = sorter_name
        self.name = f"pykilosort-register-{sorter_name}"

    def setup(self, worker):
        register(self.sorter_name)
