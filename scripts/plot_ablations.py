#!/usr/bin/env python3
"""Summarises the runs of scripts/ablations.sh: per point the final validation bits per byte (mean
and range over the seeds), tokens/s and parameters, grouped as the paper's tables; writes
DIR/summary.md, DIR/ablations.png (final bpb per group with the seed range as error bars) and
DIR/equal_cost.png (MemoryFormer against dense: bpb against steps and against seconds).

    python3 scripts/plot_ablations.py DIR
"""
import csv
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (title, [(point, label)]): the baseline appears in every group, at its own setting.
GROUPS = [
    ("Table 3: bits per chunk tau", [("tau4", "tau 4"), ("baseline", "tau 8"), ("tau10", "tau 10")]),
    ("Table 4: learning rate", [("lr1e-3", "1e-3"), ("lr3e-3", "3e-3"), ("lr1e-2", "1e-2"), ("baseline", "3e-2"),
                                ("lr1e-1", "1e-1")]),
    ("Table 5: expanding bits e", [("e0", "e 0"), ("e1", "e 1"), ("baseline", "e 2"), ("e3", "e 3")]),
    ("Table 6: activation in the Memory Block", [("baseline", "none"), ("gelu", "GeLU")]),
    ("Temperature", [("temperature0.5", "0.5"), ("baseline", "1"), ("temperature2", "2")]),
    ("Score", [("baseline", "paper"), ("score_l1", "l1")]),
    ("Output projection W_O", [("baseline", "none"), ("output_projection", "Memory Layer")]),
    ("RMSNorm eps", [("baseline", "in the root"), ("rms_eps_after_root", "after the root")]),
    ("Released numerics", [("baseline", "library"), ("released_numerics", "l1 + eps after root + small_init")]),
    ("MemoryFormer against dense", [("baseline", "MemoryFormer"), ("dense_equal_steps", "dense, equal steps"),
                                    ("dense_equal_time", "dense, equal time"),
                                    ("dense_equal_flops", "dense, equal MACs"),
                                    ("dense_equal_params", "dense, equal params")]),
]


def load(folder):
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*_seed*.json"))):
        name, seed = os.path.basename(path)[:-5].rsplit("_seed", 1)
        with open(path) as f:
            summary = json.loads(f.read().strip().splitlines()[-1])
        with open(path[:-5] + ".csv") as f:
            rows = list(csv.DictReader(f))
        params = None
        log = path[:-5] + ".log"
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                match = re.search(r"(\d+) parameters", f.read())
            params = int(match.group(1)) if match else None
        runs.setdefault(name, {})[int(seed)] = (summary, rows, params)
    return runs


def stats(values):
    return sum(values) / len(values), min(values), max(values)


def main(folder):
    runs = load(folder)
    if not runs:
        sys.exit(f"plot_ablations.py: no *_seed*.json runs in {folder}")
    lines = ["| group | setting | seeds | steps | parameters | tokens/s (mean) | seconds (mean) |"
             " val bpb: mean (range) |", "|---|---|---|---|---|---|---|---|"]
    present = [(title, [(p, label) for p, label in points if p in runs]) for title, points in GROUPS]
    present = [(t, pts) for t, pts in present if len(pts) > 1 or (pts and pts[0][0] != "baseline")]
    for title, points in present:
        for point, label in points:
            seeds = runs[point]
            summaries = [s for s, _, _ in seeds.values()]
            mean, low, high = stats([s["val_bpb"] for s in summaries])
            seconds = [float(rows[-1]["seconds"]) for _, rows, _ in seeds.values() if rows]
            params = next((p for _, _, p in seeds.values() if p), None)
            lines.append(f"| {title} | {label} | {len(seeds)} | {summaries[0]['steps']} | "
                         f"{params if params else '-'} | {stats([s['tokens_per_s'] for s in summaries])[0]:.0f} | "
                         f"{stats(seconds)[0]:.0f} | {mean:.3f} ({low:.3f}-{high:.3f}) |")
    table = "\n".join(lines)
    with open(os.path.join(folder, "summary.md"), "w") as f:
        f.write(table + "\n")
    print(table)

    cols = 3
    rows_n = (len(present) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.2 * rows_n), squeeze=False)
    for ax, (title, points) in zip(axes.flat, present):
        for i, (point, label) in enumerate(points):
            mean, low, high = stats([s["val_bpb"] for s, _, _ in runs[point].values()])
            ax.errorbar([i], [mean], yerr=[[mean - low], [high - mean]], fmt="o", capsize=4,
                        color="tab:red" if point.startswith("dense") else "tab:blue")
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels([label for _, label in points], fontsize=7, rotation=15)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    axes[0][0].set_ylabel("val bits per byte")
    fig.suptitle("Ablations: final validation bits per byte, mean and range over seeds (lower is better)")
    fig.tight_layout()
    png = os.path.join(folder, "ablations.png")
    fig.savefig(png, dpi=100)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for point, label in GROUPS[-1][1]:
        for seed, (_, rows, _) in sorted(runs.get(point, {}).items()):
            colour = "tab:blue" if point == "baseline" else None
            bpb = [float(r["val_bpb"]) for r in rows]
            kwargs = {"label": label if seed == min(runs[point]) else None, "alpha": 0.8}
            line = axes[0].plot([int(r["step"]) for r in rows], bpb, color=colour, **kwargs)[0]
            axes[1].plot([float(r["seconds"]) for r in rows], bpb, color=line.get_color(), alpha=0.8)
    axes[0].set_xlabel("optimizer step")
    axes[1].set_xlabel("seconds (wall clock, 2 threads)")
    axes[0].set_ylabel("validation bits per byte")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    curves = os.path.join(folder, "equal_cost.png")
    fig.savefig(curves, dpi=100)
    print(f"plots: {png} {curves}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
