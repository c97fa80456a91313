"""Scaling of the complete run (issue 12, item 3): time and peak memory against recording length
(64 channels) and channel count (2 minutes), from bench_end_to_end.py result files.

    python benchmarks/plot_scaling.py benchmarks/results/scaling_duration_cpu_2core.json \
        benchmarks/results/scaling_channels_cpu_2core.json --png benchmarks/results/scaling_cpu_2core.png

Prints a markdown table (wall, x real time, per-step seconds, peak RSS, seconds per recorded
second) and, per axis, the fitted exponent of wall time (1.0 = linear) and the RSS growth.
"""
import argparse
import json
from pathlib import Path

import numpy as np

STEPS = ("good_channels", "preprocess", "reorder", "learn")


def load_rows(paths) -> list[dict]:
    rows = []
    for p in paths:
        for r in json.loads(Path(p).read_text())["rows"]:
            if "pykilosort" in r and "wall_s" in r["pykilosort"]:
                rows.append(r)
    return sorted(rows, key=lambda r: (r["channels"], r["duration_s"]))


def markdown(rows) -> str:
    head = ("| channels | duration (s) | wall (s) | x real time | s per recorded s | "
            + " / ".join(STEPS) + " (s) | peak RSS (MiB) | units >= 0.8 |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        o = r["pykilosort"]
        steps = " / ".join(f"{o['steps_s'].get(s, 0):.1f}" for s in STEPS)
        lines.append(f"| {r['channels']} | {r['duration_s']:.0f} | {o['wall_s']:.1f} | "
                     f"{o['x_realtime']:.2f} | {o['wall_s'] / r['duration_s']:.3f} | {steps} | "
                     f"{o['peak_rss_mib']:.0f} | {o['all']['units_ge_0.8']} of "
                     f"{len(o['all']['accuracy'])} |")
    return "\n".join(lines)


def exponent(x, y) -> float:
    """Slope of log y against log x: 1.0 means proportional."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def summary(rows) -> str:
    out = []
    by_dur = [r for r in rows if r["channels"] == 64]
    by_chan = [r for r in rows if r["duration_s"] == 120]
    for name, sel, key in (("duration (64 channels)", by_dur, "duration_s"),
                           ("channels (120 s)", by_chan, "channels")):
        if len({r[key] for r in sel}) < 2:
            continue
        x = np.array([r[key] for r in sel], float)
        wall = np.array([r["pykilosort"]["wall_s"] for r in sel])
        rss = np.array([r["pykilosort"]["peak_rss_mib"] for r in sel])
        out.append(f"- {name}: wall time ~ x^{exponent(x, wall):.2f}; peak RSS "
                   f"{rss.min():.0f} to {rss.max():.0f} MiB (x^{exponent(x, rss):.2f})")
    return "\n".join(out)


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    for col, (key, fixed, label) in enumerate((("duration_s", ("channels", 64), "duration (s)"),
                                               ("channels", ("duration_s", 120), "channels"))):
        sel = [r for r in rows if r[fixed[0]] == fixed[1]]
        x = [r[key] for r in sel]
        ax[0, col].plot(x, [r["pykilosort"]["wall_s"] for r in sel], "o-", label="wall")
        for s in STEPS:
            ax[0, col].plot(x, [r["pykilosort"]["steps_s"].get(s, 0) for r in sel], ".--", label=s)
        ax[0, col].set(xlabel=label, ylabel="seconds", title=f"time, {fixed[0]} = {fixed[1]}")
        ax[1, col].plot(x, [r["pykilosort"]["peak_rss_mib"] for r in sel], "o-")
        ax[1, col].set(xlabel=label, ylabel="peak RSS (MiB)", ylim=(0, None), title="peak memory")
    ax[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--png")
    args = ap.parse_args()
    rows = load_rows(args.results)
    print(markdown(rows))
    print()
    print(summary(rows))
    if args.png:
        plot(rows, args.png)


if __name__ == "__main__":
    main()
