"""spikedetector3 of a Kilosort 2.5 checkout on a REAL GPU (nvcc through CuPy) against call_mex.

    python matlab_reference/original_kernels/gpu_spikedetector3.py --checkout-ks25 <checkout> [--out f.json]

The CPU harness (compare.py) runs the original's kernels on the CUDA-on-CPU executor, where expf
is glibc's and FMA contraction is g++'s. Here the same kernels-only text (translate.kernels_only)
is built by nvcc (its defaults: --fmad=true, CUDA's expf) and run through the same host sequence
(hosts_ks25.run_spikedetector3, with CuPy as the device), on compare.py's spikedetector3 cases;
rows are aligned and judged as compare.py's FMA rows. Needs CuPy and a GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from original_kernels import compare, device, hosts_ks25, translate  # noqa: E402


def compile_on_gpu(checkout) -> translate.Compiled:
    """The kernels of CUDA/spikedetector3.cu built by nvcc (CuPy's nvcc backend: the file
    includes host headers NVRTC lacks)."""
    import cupy

    path = translate.source_path(checkout, "spikedetector3")
    text = path.read_text()
    code = translate.kernels_only(text, "spikedetector3")
    mod = cupy.RawModule(code=code, backend="nvcc", options=("-std=c++17",))
    names = tuple(translate.kernel_names(code))
    return translate.Compiled("spikedetector3", mod, translate.source_constants(text), path, names)


def use_gpu(compiled) -> None:
    """Point the host runner at the GPU: real CuPy for the buffers, nvcc's module for launches."""
    import cupy

    device.executor = lambda: (None, cupy)
    hosts_ks25.compile_mex = lambda checkout, mex, fma=False: compiled


def gpu_row(case, checkout) -> dict:
    from pykilosort.kernels.mex import call_mex

    t0 = time.perf_counter()
    run = hosts_ks25.run_spikedetector3(checkout, case.args)
    t_orig = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = [np.asarray(x) for x in call_mex(case.mex, case.args, device="cpu")]
    t_ours = time.perf_counter() - t0
    a, b, masks, info = compare.align(case, run, ours)
    outputs = {n: compare.output_diff(x, y, masks.get(i))
               for i, (n, x, y) in enumerate(zip(compare.OUTPUT_NAMES[case.mex], a, b))}
    row = {"case": case.label, "mex": case.mex, "source": case.source, "build": "fma",
           "device": "gpu", "exact": all(d["exact"] for d in outputs.values()),
           "outputs": outputs, **info, "seconds_original": round(t_orig, 2),
           "seconds_ours": round(t_ours, 2)}
    row["verdict"] = compare.verdict(row)
    return row


def expf_vs_host(case) -> dict:
    """The footprint weights sA: CUDA's expf of the float32 arguments (as sumChannels) against
    ours (footprint_weights: correctly rounded exp). Count and largest difference in ulp."""
    import cupy

    from pykilosort.kernels.spikedetector import NSIZES, footprint_weights

    dist, sig = np.asarray(case.args[4], np.float32), np.float32(case.args[0].ravel()[9])
    k = np.arange(1, NSIZES + 1, dtype=np.float32)
    arg = -(dist * dist)[None] / ((k * k * sig) * sig)[:, None, None]  # float32, as the kernel
    expf = cupy.ElementwiseKernel("float32 x", "float32 y", "y = expf(x)", "sd3_expf")
    gpu = cupy.asnumpy(expf(cupy.asarray(np.ascontiguousarray(arg))))
    ours = np.asarray(footprint_weights(dist, sig))
    ulp = np.abs(gpu.view(np.int32).astype(np.int64) - ours.view(np.int32).astype(np.int64))
    return {"weights": int(ulp.size), "differ": int((ulp > 0).sum()), "max_ulp": int(ulp.max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout-ks25", required=True)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    import cupy

    use_gpu(compile_on_gpu(a.checkout_ks25))
    rows = [gpu_row(c, a.checkout_ks25) for c in compare.spikedetector3_cases()]
    for r in rows:
        print(f"{r['case']:40s} gpu {r['verdict']:24s} {compare.summary(r)} "
              f"kkmax_diff={r.get('kkmax_diff')}", flush=True)
    print(compare.markdown(rows))
    expf = expf_vs_host(compare.spikedetector3_cases()[0])
    print(f"footprint weights, CUDA expf vs correctly rounded: {expf}")
    if a.out:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        Path(a.out).write_text(json.dumps({"gpu": props["name"].decode(), "expf": expf, "rows": rows},
                                          indent=1) + "\n")
    return 1 if any(r["verdict"].startswith("FINDING") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
