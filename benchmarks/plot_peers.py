"""Tables and figures of a bench_peers.py result.

    python benchmarks/plot_peers.py RESULT.json [MORE.json ...] [--figures DIR]

Prints the markdown tables of benchmarks/results/README.md ("Peers", "Where we lose", and each
step's own peak memory in our runs that recorded it) and writes
``<stem>_accuracy_vs_snr.png`` (accuracy of every ground-truth unit against its SNR, a panel per
recording) and ``<stem>_cost.png`` (x real time and peak memory against channel count and
duration, static recordings) next to the (first) result or in ``--figures``. Several results
(for instance a run of a subset of the sorters on long recordings) are shown as one.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

PEER = "pykilosort_ks2"  # wall-time ratios are against our Kilosort2 flow in the same run
sys.path.insert(0, str(Path(__file__).parent))
from bench_peers import VARIANTS  # noqa: E402  (ours with a parameter changed: own table only)


def memory_mib(res: dict) -> float:
    """Peak memory of a run's process tree: the proportional set size where it was measured
    (every page once), else the summed resident memory (an upper bound for forking sorters)."""
    return res.get("peak_pss_mib") or res["peak_rss_mib"]


def _memory_cell(res: dict) -> str:
    """'PSS' alone, or 'RSS*' for runs measured before the harness sampled PSS."""
    return f"{memory_mib(res):.0f}" + ("" if res.get("peak_pss_mib") else "*")


def label(row: dict) -> str:
    return f"{row['case']} {row['channels']} ch {row['duration_s'] / 60:g} min"


def results_table(rows: list) -> str:
    lines = ["| recording | sorter | units >= 0.8 | false-positive / redundant (clusters) | "
             "wall (s) | x real time | wall / pykilosort_ks2 (same run) | peak PSS, process tree (MiB) | "
             "peak RSS, process tree (MiB) | peak RSS, main process (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = row["sorters"].get(PEER, {}).get("wall_s")
        for name, res in row["sorters"].items():
            if res["status"] != "ok":
                why = (f"timed out at {res['limit_s']:.0f} s" if res["status"] == "timeout"
                       else "failed: " + res["error"].strip().splitlines()[-1][:80])
                lines.append(f"| {label(row)} | {name} | {why} | | | | | {_memory_cell(res)} | "
                             f"{res['peak_rss_mib']:.0f} | |")
                continue
            # VmHWM; the older ru_maxrss also counted the benchmark's memory at the fork
            main = res.get("peak_rss_self_mib") or res.get("ru_maxrss_self_mib")
            lines.append("| {} | {} | {} of {} | {} / {} ({}) | {:.0f} | {:.2f} | {} | {} | {:.0f} | {} |".format(
                label(row), name + _stored_mark(res), res["units_ge_0.8"], row["units"], res["false_positive"],
                res["redundant"], res["n_clusters"], res["wall_s"], res["x_realtime"],
                f"{res['wall_s'] / base:.2f}" if base and not res.get("stored_in") else "-", _memory_cell(res),
                res["peak_rss_mib"], f"{main:.0f}" if main else "-"))
    return "\n".join(lines)


def summary_table(rows: list, fields=("units_ge_0.8", "false_positive")) -> str:
    """A line per recording, a column per sorter: units >= 0.8 / false-positive units (or the
    fields given; "memory": peak PSS, or RSS* where PSS was not measured), 'timeout' or 'failed'
    where a sorter gave no sorting."""
    names = list(dict.fromkeys(n for r in rows for n in r["sorters"]))
    lines = [f"| recording (units) | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for row in rows:
        cells = []
        for name in names:
            res = row["sorters"].get(name)
            if res is None:
                cells.append("not run")
            elif res["status"] != "ok":
                cells.append(res["status"] + _stored_mark(res))
            else:
                cells.append(" / ".join(_memory_cell(res) if f == "memory" else _fmt(res[f])
                                        for f in fields) + _stored_mark(res))
        lines.append(f"| {label(row)} ({row['units']}) | {' | '.join(cells)} |")
    return "\n".join(lines)


def _stored_mark(res: dict) -> str:
    """' (†)' for a result taken from an earlier file (bench_peers --peers-from): it was measured
    with the row's other sorters of that file, possibly on another machine."""
    return " (†)" if res.get("stored_in") else ""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def losses_table(rows: list) -> str:
    lines = ["| recording | ours | peer | units (ours / peer) | unit: SNR, rate (Hz), nearest unit "
             "(um), max similarity, drift ptp (um), our accuracy, lost at: what became of it |",
             "|---|---|---|---|---|"]
    for row in rows:
        for loss in row["where_we_lose"]:
            units = "; ".join(
                f"{m['unit']}: {m['snr']:.1f}, {m['firing_rate_hz']:.1f}, {m['nearest_unit_um']:.0f}, "
                f"{m['max_similarity']:.2f}, {m['displacement_ptp_um']:.0f}, {m['our_accuracy']:.2f}, "
                f"{m['lost_at']}: {_fate(m)}" for m in loss["missed"])
            lines.append(f"| {label(row)} | {loss['ours']} | {loss['peer']} | "
                         f"{loss['ours_units']} / {loss['peer_units']} | {units} |")
    return "\n".join(lines)


def _fate(m: dict) -> str:
    """What became of a missed unit: after learning when it was lost there, and at the end."""
    after_learn = m.get("fate_after_learn")
    if m["lost_at"] == "learn" and after_learn and after_learn != m["fate"]:
        return f"{after_learn} after learn, {m['fate']} at the end"
    return m["fate"]


def plot_accuracy(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for r in rows for n in r["sorters"]})
    colors = dict(zip(names, plt.cm.tab10(np.linspace(0, 1, 10))))
    ncols = min(4, len(rows))
    nrows = -(-len(rows) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False,
                             sharey=True)
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, rows):
        snr = np.array(row["units_table"]["snr"])
        order = np.argsort(snr)
        for name, res in row["sorters"].items():
            if res["status"] != "ok":
                continue
            acc = np.array(res["accuracy"])
            ax.plot(snr[order], acc[order], "o", ms=3.5, alpha=0.7, color=colors[name],
                    label=f"{name} ({res['units_ge_0.8']})")
        ax.axhline(0.8, color="0.6", lw=0.6, ls="--")
        ax.set(title=label(row), xlabel="SNR (ground-truth unit)", ylim=(-0.02, 1.02))
        ax.legend(fontsize=6, loc="lower right")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost(rows: list, path: Path) -> None:
    """x real time and peak RSS against channels (static, shortest duration) and duration
    (static, 64 channels); a panel pair is skipped when the result has a single point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    static = [r for r in rows if r["case"] == "static"]
    axes_of = {"channels": [r for r in static if r["duration_s"] == min(x["duration_s"] for x in static)],
               "duration_s": [r for r in static if r["channels"] == 64]}
    axes_of = {k: sel for k, sel in axes_of.items() if len({r[k] for r in sel}) > 1}
    if not axes_of:
        return
    fig, axes = plt.subplots(2, len(axes_of), figsize=(4.5 * len(axes_of), 6.5), squeeze=False)
    for col, (key, sel) in enumerate(axes_of.items()):
        names = sorted({n for r in sel for n in r["sorters"]})
        for name in names:
            pts = sorted((r[key], r["sorters"][name]) for r in sel if name in r["sorters"]
                         and r["sorters"][name]["status"] == "ok")
            if not pts:
                continue
            x = [p[0] for p in pts]
            axes[0, col].plot(x, [p[1]["x_realtime"] for p in pts], "o-", label=name)
            axes[1, col].plot(x, [memory_mib(p[1]) for p in pts], "o-", label=name)
        axes[0, col].set(xlabel=key, ylabel="x real time", yscale="log")
        axes[1, col].set(xlabel=key, ylabel="peak memory of the process tree (MiB)",
                         yscale="log")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def steps_memory_table(rows: list) -> str:
    """Our runs that recorded each step's own peak memory (VmHWM reset before the step): a line
    per run, a column per step in pipeline order; '-' where a flow has no such step."""
    runs = [(row, name, res) for row in rows for name, res in row["sorters"].items()
            if res.get("steps_peak_rss_mib") and not res.get("stored_in")]
    from pykilosort.main import step_names  # every step, in pipeline order

    seen = {k for _, _, res in runs for k in res["steps_peak_rss_mib"]}
    steps = [k for k in step_names() if k in seen]
    lines = [f"| recording | sorter | {' | '.join(steps)} | process (MiB) |",
             "|---|---|" + "---|" * (len(steps) + 1)]
    for row, name, res in runs:
        cells = [_fmt(res["steps_peak_rss_mib"].get(k)) if k in res["steps_peak_rss_mib"]
                 else "-" for k in steps]
        whole = res.get("peak_rss_self_mib")
        lines.append(f"| {label(row)} | {name} | {' | '.join(cells)} | "
                     f"{f'{whole:.0f}' if whole else '-'} |")
    return "\n".join(lines)


def without(rows: list, names) -> list:
    """The rows with the sorters ``names`` left out."""
    return [{**r, "sorters": {k: v for k, v in r["sorters"].items() if k not in names}}
            for r in rows]


def latest_rows(paths: list) -> list:
    """The rows of all results files; a recording in several files keeps the last file's row,
    in the place of its first appearance (a re-run of some recordings replaces the old rows)."""
    rows = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["rows"]:
            rows[row["name"]] = row
    return list(rows.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--figures", type=Path)
    args = ap.parse_args()
    every = latest_rows(args.results)
    rows = without(every, VARIANTS)
    first = args.results[0]
    folder = args.figures or first.parent
    plot_accuracy(rows, folder / f"{first.stem}_accuracy_vs_snr.png")
    plot_cost(rows, folder / f"{first.stem}_cost.png")
    print(summary_table(rows))
    print()
    print(summary_table(rows, fields=("x_realtime", "memory")))
    print()
    print(results_table(every))
    print()
    print(losses_table(rows))
    print()
    print(steps_memory_table(every))


if __name__ == "__main__":
    main()
