"""lfilter throughput (samples x channels per second): numba twin, CUDA kernel when a GPU is
visible, and scipy.signal.lfilter (float32, one thread) as the peer measured in the same run.

    python benchmarks/bench_lfilter.py [--channels 32 64 384] [--repeats 5] [--out FILE.json]

Shape per call: one Kilosort2 preprocessing batch, NTbuff = 65600 + 4*64 samples x channels,
Fortran order (time fastest), 3rd-order Butterworth high-pass at 150 Hz.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.signal

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from pykilosort.backend import cuda_available  # noqa: E402
from pykilosort.kernels import lfilter  # noqa: E402

NTBUFF = 65600 + 4 * 64


def best_time(fn, repeats):
    fn()  # warm-up (JIT / kernel compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(n_chan, repeats):
    b, a = scipy.signal.butter(3, 2 * 150 / 30000, "high")
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((NTBUFF, n_chan)), np.float32)
    out = np.empty_like(x)
    b32, a32 = b.astype(np.float32), a.astype(np.float32)
    size = x.size
    row = {"channels": n_chan, "samples": NTBUFF}
    row["numba_twin"] = size / best_time(lambda: lfilter(x, b, a, out=out), repeats)
    row["scipy_lfilter_f32"] = size / best_time(lambda: scipy.signal.lfilter(b32, a32, x, axis=0),
                                                repeats)
    if cuda_available():
        import cupy

        xg = cupy.asarray(x, order="F")
        og = cupy.empty_like(xg)

        def gpu():
            lfilter(xg, b, a, out=og)
            cupy.cuda.Stream.null.synchronize()

        row["cuda_kernel"] = size / best_time(gpu, repeats)
        xc = cupy.asarray(x, order="C")  # channel-fastest: coalesced across threads
        oc = cupy.empty_like(xc)

        def gpu_c():
            lfilter(xc, b, a, out=oc)
            cupy.cuda.Stream.null.synchronize()

        row["cuda_kernel_channel_fastest"] = size / best_time(gpu_c, repeats)
    row["twin_over_scipy"] = row["numba_twin"] / row["scipy_lfilter_f32"]
    row["twin_x_realtime_at_30kHz"] = row["numba_twin"] / (30000 * n_chan)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64, 384])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [bench(c, args.repeats) for c in args.channels]
    result = {"benchmark": "lfilter", "machine": describe(), "unit": "samples*channels/s",
              "rows": rows}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
