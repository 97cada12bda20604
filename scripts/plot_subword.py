#!/usr/bin/env python3
"""Plots the runs of scripts/subword_experiment.sh: validation bits per byte against steps and
against seconds, one line per (architecture, seed), into DIR/subword_bpb.png, and prints a markdown
table of the final numbers (mean and range over the seeds).

    python3 scripts/plot_subword.py DIR
"""
import csv
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"memoryformer": "tab:blue", "dense": "tab:red"}


def main(folder):
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*_seed*.csv"))):
        arch, seed = os.path.basename(path)[:-4].rsplit("_seed", 1)
        with open(path) as f:
            rows = list(csv.DictReader(f))
        with open(path[:-4] + ".json") as f:
            summary = json.loads(f.read().strip().splitlines()[-1])
        runs[(arch, int(seed))] = (rows, summary)
    if not runs:
        sys.exit(f"plot_subword.py: no *_seed*.csv runs in {folder}")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for (arch, seed), (rows, _) in sorted(runs.items()):
        bpb = [float(r["val_bpb"]) for r in rows]
        label = arch if seed == 1 else None
        axes[0].plot([int(r["step"]) for r in rows], bpb, color=COLOURS.get(arch, "k"), alpha=0.8, label=label)
        axes[1].plot([float(r["seconds"]) for r in rows], bpb, color=COLOURS.get(arch, "k"), alpha=0.8, label=label)
    axes[0].set_xlabel("optimizer step")
    axes[1].set_xlabel("seconds (wall clock, 2 threads)")
    axes[0].set_ylabel("validation bits per byte")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Python 3.11 docs, 4000 SentencePiece pieces, 2 layers x d 128; 3 seeds each")
    fig.tight_layout()
    png = os.path.join(folder, "subword_bpb.png")
    fig.savefig(png, dpi=110)

    print("| architecture | lr | steps | tokens/s | val bpb (mean, range over 3 seeds) | val ppl (mean) |")
    print("|---|---|---|---|---|---|")
    for arch in sorted({a for a, _ in runs}):
        s = [runs[k][1] for k in sorted(runs) if k[0] == arch]
        bpb = [x["val_bpb"] for x in s]
        print(f"| {arch} | {s[0]['lr']:g} | {s[0]['steps']} | {sum(x['tokens_per_s'] for x in s) / len(s):.0f} | "
              f"{sum(bpb) / len(bpb):.3f} ({min(bpb):.3f}-{max(bpb):.3f}) | "
              f"{sum(x['val_ppl'] for x in s) / len(s):.1f} |")
    print(f"plot: {png}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
