#!/usr/bin/python3
"""Draws the benchmark results of benchmarks/run.sh (Google Benchmark JSON) as PNGs.

    benchmarks/plot.py RESULTS.json [MORE.json ...] [--out-dir docs] [--threads T] [--markdown]

Several files (memoryformer_bench's and memoryformer_bench_blas_block's) are merged, keeping the
faster time of each benchmark: every block, dense or MemoryFormer, is shown with the faster of
Eigen's GEMM and the system BLAS.

- layer_latency.png: time per token against N, for the dense baselines (Eigen, BLAS) and the
  lookup with each table type, at d = h = 1024 and tau 8 (or the largest d present), cold and hot
  weights side by side, at T threads (default: the most in the file).
- block_speedup.png: dense block time / MemoryFormer block time, forward and decode, per (d, s),
  with fp32 tables and (when measured) bf16 and int8 copies.
--markdown also prints the headline table (the README's) to stdout.

With repetitions, the medians are used. Needs python3-matplotlib (Debian), nothing else.
"""
import argparse
import json
import os
import sys


def parse_name(name):
    """'BM_MemoryLayer/N:1/d:1024/.../threads:2/process_time/real_time' -> ('BM_MemoryLayer', {...})."""
    parts = name.split("/")
    args = {}
    for part in parts[1:]:
        if ":" in part:
            key, value = part.split(":", 1)
            args[key] = int(value)
    return parts[0], args


def load(path):
    """Returns [(family, args, seconds per token)], medians when the file has aggregates."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    runs = data.get("benchmarks", [])
    if not runs:
        sys.exit(f"plot.py: {path}: no benchmarks in the file")
    has_medians = any(r.get("aggregate_name") == "median" for r in runs)
    rows = []
    for r in runs:
        if has_medians and r.get("aggregate_name") != "median":
            continue
        if r.get("error_occurred"):
            continue
        if "time_per_token" not in r:
            sys.exit(f"plot.py: {path}: run '{r['name']}' has no time_per_token counter "
                     "(results from an older memoryformer_bench?)")
        family, args = parse_name(r.get("run_name", r["name"]))
        rows.append((family, args, float(r["time_per_token"])))
    return data.get("context", {}), rows


def merge_fastest(rows):
    """One row per (family, arguments): the fastest of the files'."""
    best = {}
    for family, args, t in rows:
        key = (family, tuple(sorted(args.items())))
        if key not in best or t < best[key][2]:
            best[key] = (family, args, t)
    return list(best.values())


def pick(rows, family, **want):
    return {tuple(sorted(a.items())): t for f, a, t in rows
            if f == family and all(a.get(k) == v for k, v in want.items())}


def series(rows, family, **want):
    """{N: seconds per token} for one family at fixed arguments."""
    out = {}
    for f, a, t in rows:
        if f == family and all(a.get(k) == v for k, v in want.items()):
            out[a["N"]] = t
    return dict(sorted(out.items()))


TABLES = {0: "fp32", 1: "bf16", 2: "int8"}


def layer_shape(rows):
    ds = sorted({a["d"] for f, a, _ in rows if f == "BM_MemoryLayer"})
    if not ds:
        return None
    return 1024 if 1024 in ds else ds[-1]


def save(fig, path):
    """Writes the figure to a temporary file first, so that a failed run leaves no half-written PNG."""
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    print(f"plot.py: wrote {path}")


def plot_layer(plt, rows, threads, out_dir):
    d = layer_shape(rows)
    if d is None:
        print("plot.py: no BM_MemoryLayer results, layer_latency.png not drawn")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, cold in zip(axes, (1, 0)):
        common = dict(d=d, h=d, cold=cold, threads=threads)
        curves = [("dense Eigen", series(rows, "BM_DenseEigen", **common), "k", "-"),
                  ("dense BLAS", series(rows, "BM_DenseBlas", **common), "0.5", "-")]
        for table, label in TABLES.items():
            curves.append((f"lookup {label}", series(rows, "BM_MemoryLayer", tau=8, table=table, **common),
                           "C%d" % table, "--"))
        for label, points, color, style in curves:
            if points:
                ax.plot(list(points), [t * 1e6 for t in points.values()], style, marker="o",
                        color=color, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens per call N")
        ax.set_title(f"{'cold' if cold else 'hot'} weights, d = h = {d}, tau 8, {threads} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("time per token (us)")
    axes[0].legend()
    save(fig, os.path.join(out_dir, "layer_latency.png"))


def block_speedups(rows, threads):
    """[(label, speedup)]: dense block time over MemoryFormer block time (fp32 tables, and the
    compressed bf16 and int8 variants in either layout when measured), per (kind, d, s) at `threads`."""
    out = []
    for kind in ("Forward", "Decode"):
        dense = {(a["d"], a["s"]): t for f, a, t in rows
                 if f == "BM_Block" + kind and a["arch"] == 0 and a["threads"] == threads}
        variants = {}
        for f, a, t in rows:
            if a.get("threads") != threads:
                continue
            if f == "BM_Block" + kind and a["arch"] == 1:
                variants[(a["d"], a["s"], "fp32")] = t
            elif f == "BM_Block" + kind + "Compressed":
                variants[(a["d"], a["s"], TABLES[a["table"]])] = t
            elif f == "BM_Block" + kind + "Tiled":
                variants[(a["d"], a["s"], TABLES[a["table"]] + " tiles")] = t
        for (d, s, table), t in sorted(variants.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
            if (d, s) in dense:
                out.append((f"{kind.lower()} {table}\nd {d} s {s}", dense[(d, s)] / t))
    return out


def plot_blocks(plt, rows, threads, out_dir):
    bars = block_speedups(rows, threads)
    if not bars:
        print("plot.py: no block results with both architectures, block_speedup.png not drawn")
        return
    # One panel per kind (forward, decode), so that each stays readable with many table variants.
    kinds = [k for k in ("forward", "decode") if any(label.startswith(k) for label, _ in bars)]
    width = max(len([b for b in bars if b[0].startswith(k)]) for k in kinds)
    fig, axes = plt.subplots(len(kinds), 1, figsize=(max(6, 0.75 * width), 4 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        mine = [b for b in bars if b[0].startswith(kind)]
        ax.bar(range(len(mine)), [b[1] for b in mine], color="C0" if kind == "forward" else "C1")
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels([b[0][len(kind) + 1:] for b in mine], fontsize=7)
        ax.set_ylabel("dense time / MemoryFormer time")
        ax.set_title(f"Block {kind} speedup, {threads} thread(s) (above 1: MemoryFormer faster)")
        for i, (_, v) in enumerate(mine):
            ax.text(i, v, f"{v:.1f}x", ha="center", va="bottom", fontsize=7)
    save(fig, os.path.join(out_dir, "block_speedup.png"))


def markdown(rows, threads):
    """The headline table: us per token at N = 1 cold and N = 4096 hot, and the ratio to the best dense."""
    d = layer_shape(rows)
    if d is None:
        return ""
    lines = [f"| d = h = {d}, tau 8, {threads} threads | best dense | lookup fp32 | bf16 | int8 |",
             "|---|---|---|---|---|"]
    for n, cold in ((1, 1), (1, 0), (64, 0), (4096, 0)):
        common = dict(N=n, d=d, h=d, cold=cold, threads=threads)
        dense = [t for fam in ("BM_DenseEigen", "BM_DenseBlas") for t in pick(rows, fam, **common).values()]
        if not dense:
            continue
        best = min(dense)
        cells = [f"{best * 1e6:.1f} us"]
        for table in TABLES:
            t = list(pick(rows, "BM_MemoryLayer", tau=8, table=table, **common).values())
            cells.append(f"{t[0] * 1e6:.1f} us ({best / t[0]:.1f}x)" if t else "-")
        lines.append(f"| N = {n}, {'cold' if cold else 'hot'} | " + " | ".join(cells) + " |")
    blocks = block_speedups(rows, threads)
    if blocks:
        lines += ["", f"| block, {threads} threads | dense / MemoryFormer time |", "|---|---|"]
        lines += [f"| {label.replace(chr(10), ', ')} | {speedup:.1f}x |" for label, speedup in blocks]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="JSON written by benchmarks/run.sh")
    parser.add_argument("--out-dir", default="docs", help="where the PNGs go (default: docs)")
    parser.add_argument("--threads", type=int, default=0, help="thread count to plot (default: the most)")
    parser.add_argument("--markdown", action="store_true", help="print the headline table")
    opts = parser.parse_args()

    rows = merge_fastest([row for path in opts.results for row in load(path)[1]])
    threads = opts.threads or max(a.get("threads", 1) for _, a, _ in rows)
    if opts.markdown:
        print(markdown(rows, threads))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py: needs matplotlib: apt-get install python3-matplotlib")
    os.makedirs(opts.out_dir, exist_ok=True)
    plot_layer(plt, rows, threads, opts.out_dir)
    plot_blocks(plt, rows, threads, opts.out_dir)


if __name__ == "__main__":
    main()
