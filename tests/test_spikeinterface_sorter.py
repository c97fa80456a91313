"""pykilosort as a SpikeInterface sorter: run_sorter("pykilosort", ...) on recordings from
SpikeInterface's own generator, binary or not, read back from the phy folder."""
import numpy as np
import pytest

si = pytest.importorskip("spikeinterface.full")
pytest.importorskip("pandas")  # SpikeInterface's Kilosort reader needs it

from pykilosort.spikeinterface_sorter import PyKilosortSorter, register  # noqa: E402


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    recording, truth = si.generate_ground_truth_recording(
        durations=[40.0], num_channels=32, num_units=8, seed=5, sampling_frequency=30000.0)
    binary = recording.save(folder=tmp_path_factory.mktemp("si") / "rec", n_jobs=1,
                            progress_bar=False)
    return binary, truth


def test_register_replaces_the_broken_wrapper():
    from spikeinterface.sorters import sorterlist

    register()
    assert sorterlist.sorter_dict["pykilosort"] is PyKilosortSorter
    assert sum(s.sorter_name == "pykilosort" for s in sorterlist.sorter_full_list) == 1
    other = register("pykilosort_cpu")
    assert sorterlist.sorter_dict["pykilosort_cpu"] is other and other.sorter_name == "pykilosort_cpu"


def test_unknown_parameter_fails_before_sorting(ground_truth, tmp_path):
    register()
    with pytest.raises(ValueError, match="Invalid parameters"):
        si.run_sorter("pykilosort", ground_truth[0], folder=tmp_path / "x", fshihg=300)
    with pytest.raises(Exception, match="fshigh"):
        si.run_sorter("pykilosort", ground_truth[0], folder=tmp_path / "y", fshigh=-1)


@pytest.mark.parametrize("kind", ["binary", "lazy"])
def test_run_sorter_returns_the_sorting(ground_truth, tmp_path, kind):
    """A binary recording is read in place; a lazy one (scaled to float32) is written first."""
    register()
    recording, truth = ground_truth
    if kind == "lazy":
        recording = si.scale(recording, gain=1.0, offset=0.0, dtype="float32")
    sorting = si.run_sorter("pykilosort", recording, folder=tmp_path / kind, device="cpu",
                            remove_existing_folder=True)
    out = tmp_path / kind / "sorter_output"
    assert (out / "recording.dat").exists() == (kind == "lazy")
    assert (out / "output" / "params.py").is_file()
    cmp = si.compare_sorter_to_ground_truth(truth, sorting, exhaustive_gt=True)
    accuracy = cmp.get_performance()["accuracy"].values.astype(float)
    # measured, binary and lazy alike: 7 of 8 units at >= 0.83 on an Intel Xeon (missed: one of
    # SNR 7.4); 6 on an AMD EPYC, where another unit ends at 0.76: numpy's and BLAS's kernels
    # round differently there, and the KS2 flow's batch order amplifies it (results README,
    # "Where we lose", item 7). A broken wrapper or time base finds none.
    assert (accuracy >= 0.8).sum() >= 6
    good = si.read_kilosort(out / "output", keep_good_only=True)
    assert 0 < good.get_num_units() <= sorting.get_num_units()
