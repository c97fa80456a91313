"""Ground-truth recordings for the benchmarks: SpikeInterface's generator written as int16 flat
binaries with a probeinterface probe, the true spike trains and a table of the units.

Cases (``generate_drifting_recording``; its static and drifting outputs share units and trains):
- ``static``: no motion.
- ``rigid``: zigzag, 40 um peak to peak (+-20 um), period 60 s, from 10 s; every unit moves alike.
- ``bump``: steps between +15 and -15 um at random intervals of 15-30 s from 10 s, non-rigid: a
  unit's displacement is scaled linearly with its depth from 0.4 to 1 (SpikeInterface's default
  bump settings can impose no displacement at all: DESIGN.md section 7).
Probe: Neuropixels 1.0 layout (4 staggered columns, 20 um between rows). Units fire at 2-8 Hz.
"""
import json
import time
from pathlib import Path

import numpy as np

from pykilosort.utils import file_sha256


def neuropixels_like_probe(channels: int):
    """Neuropixels 1.0 layout: 4 columns 16 um apart, two contacts per 20 um row, alternate rows
    shifted (columns at 40 um pitch, every other one offset by 20 um)."""
    from probeinterface import generate_multi_columns_probe

    probe = generate_multi_columns_probe(num_columns=4, num_contact_per_column=channels // 4,
                                         xpitch=16, ypitch=40, y_shift_per_column=[0, 20, 0, 20],
                                         contact_shapes="square", contact_shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(channels))
    return probe


def drift_kwargs(case: str) -> dict:
    """The motion of a case (static: the drifting output is simply not used); the random bump
    times follow generate_drifting_recording's seed."""
    if case in ("rigid", "static"):
        motion = dict(drift_mode="zigzag", non_rigid_gradient=None, t_start_drift=10.0,
                      t_end_drift=None, period_s=60)
        half = 20.0
    elif case == "bump":
        motion = dict(drift_mode="bump", non_rigid_gradient=0.4, t_start_drift=10.0,
                      t_end_drift=None, bump_interval_s=(15.0, 30.0))
        half = 15.0
    else:
        raise ValueError(f"unknown case {case!r}: static, rigid or bump")
    return dict(displacement_sampling_frequency=5.0, drift_start_um=[0, half],
                drift_stop_um=[0, -half], drift_step_um=1, motion_list=[motion])


UNITS_TABLE_VERSION = 2  # a meta whose table is older is completed again (not re-recorded)


def unit_table(static, truth, extra: dict, *, case: str, duration: float, seed: int) -> dict:
    """Per ground-truth unit (index order): SNR, firing rate, depth, distance to the nearest
    other unit, the largest template cosine similarity to another unit, and the peak-to-peak
    displacement imposed on it. SNR is SpikeInterface's quality metric (peak amplitude of the
    median template on its best channel / that channel's noise level), measured on the static
    recording so a drifting unit is not blurred."""
    import spikeinterface.core as si
    from spikeinterface.metrics.quality import compute_snrs

    analyzer = si.create_sorting_analyzer(truth, static, format="memory", sparse=False)
    analyzer.compute("random_spikes", max_spikes_per_unit=300, seed=seed)
    analyzer.compute(["templates", "noise_levels"])
    analyzer.compute("template_similarity", method="cosine")
    snr = np.array(list(compute_snrs(analyzer).values()))
    similarity = analyzer.get_extension("template_similarity").get_data().copy()
    np.fill_diagonal(similarity, -np.inf)
    loc = np.asarray(extra["unit_locations"])[:, :2]
    dist = np.linalg.norm(loc[:, None] - loc[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    vectors = np.asarray(extra["displacement_vectors"])[:, 1, :]  # (times, motions), vertical
    factor = np.asarray(extra["displacement_unit_factor"])  # (units, motions)
    moved = vectors @ factor.T * (case != "static")  # (times, units); static: nothing moved
    counts = np.bincount(truth.to_spike_vector()["unit_index"], minlength=loc.shape[0])
    return {"version": UNITS_TABLE_VERSION, "snr": np.round(snr, 2).tolist(),
            "firing_rate_hz": np.round(counts / duration, 3).tolist(),
            "depth_um": np.round(loc[:, 1], 1).tolist(),
            "nearest_unit_um": np.round(dist.min(axis=1), 1).tolist(),
            "max_similarity": np.round(similarity.max(axis=1), 3).tolist(),
            "displacement_ptp_um": np.round(np.ptp(moved, axis=0), 1).tolist()}


def write_recording(work: Path, *, case: str, channels: int, duration: float, seed: int,
                    n_units: int, units_table: bool = False) -> Path:
    """Write one recording, its probe and its truth under ``work`` once; returns the meta JSON.

    The truth npz holds times and units (sample, index), the imposed motion
    (displacement_vectors, displacement_unit_factor, displacement_fs) and unit_locations."""
    from probeinterface import write_probeinterface
    from spikeinterface.generation import generate_drifting_recording

    name = f"{case}{channels}_{int(duration)}s_seed{seed}"
    meta_path = work / f"{name}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta and (not units_table or meta.get("units_table", {}).get("version") == UNITS_TABLE_VERSION):
        if "sha256" not in meta:  # written before the hash was kept
            _write_json(meta_path, {**meta, "sha256": file_sha256(meta["bin"])})
        return meta_path
    probe = neuropixels_like_probe(channels)
    t0 = time.perf_counter()
    static, drifting, truth, extra = generate_drifting_recording(
        num_units=n_units, duration=duration, probe=probe, seed=seed, extra_outputs=True,
        generate_displacement_vector_kwargs=drift_kwargs(case))
    if meta:  # the recording is on disk: only its table of units is missing or outdated
        meta["units_table"] = unit_table(static, truth, extra, case=case, duration=duration,
                                         seed=seed)
        _write_json(meta_path, meta)
        return meta_path
    recording = static if case == "static" else drifting
    saved = recording.save(folder=work / name, dtype="int16", n_jobs=1, progress_bar=False,
                           overwrite=True, chunk_duration="1s")
    spikes = truth.to_spike_vector()
    np.savez(work / f"{name}_truth.npz", times=spikes["sample_index"], units=spikes["unit_index"],
             displacement_vectors=extra["displacement_vectors"],
             displacement_unit_factor=extra["displacement_unit_factor"],
             unit_locations=extra["unit_locations"],
             displacement_fs=extra["displacement_sampling_frequency"])
    probe_json = work / f"{name}_probe.json"
    write_probeinterface(probe_json, probe)
    meta = {"name": name, "bin": str(saved.get_binary_description()["file_paths"][0]),
            "probe_json": str(probe_json), "fs": recording.sampling_frequency,
            "locations": recording.get_channel_locations().tolist(),
            "n_samples": recording.get_num_samples(), "duration_s": duration, "case": case,
            "channels": channels, "units": n_units, "seed": seed,
            "truth": str(work / f"{name}_truth.npz"), "generate_s": time.perf_counter() - t0,
            "sha256": file_sha256(saved.get_binary_description()["file_paths"][0])}
    if units_table:
        meta["units_table"] = unit_table(static, truth, extra, case=case, duration=duration,
                                         seed=seed)
    _write_json(meta_path, meta)  # the meta marks a complete recording: written last
    return meta_path


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)
