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
--markdown also prints the headline table (the README's) to stdout: median us per token, and in
brackets the speedup range, the best dense median over the lookup's slowest and fastest repetition.

With repetitions, the plots use the medians. Needs python3-matplotlib (Debian), nothing else.
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
    """Returns [(family, args, [seconds per token, one per repetition])]. A file with repetitions
    holds every repetition (run.sh asks for them with --benchmark_display_aggregates_only); a file
    with aggregates only gives its median as the one value."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    runs = data.get("benchmarks", [])
    if not runs:
        sys.exit(f"plot.py: {path}: no benchmarks in the file")
    has_iterations = any(r.get("run_type", "iteration") == "iteration" for r in runs)
    times = {}
    untimed = set()  # families measured per call, not per token (BM_ParallelFor): not plotted
    for r in runs:
        wanted = (r.get("run_type", "iteration") == "iteration" if has_iterations
                  else r.get("aggregate_name") == "median")
        if not wanted or r.get("error_occurred"):
            continue
        if "time_per_token" not in r:
            untimed.add(parse_name(r.get("run_name", r["name"]))[0])
            continue
        times.setdefault(r.get("run_name", r["name"]), []).append(float(r["time_per_token"]))
    if not times:
        sys.exit(f"plot.py: {path}: no run has a time_per_token counter "
                 "(results from an older memoryformer_bench?)")
    if untimed:
        print(f"plot.py: {path}: not plotted (no time_per_token counter): {', '.join(sorted(untimed))}",
              file=sys.stderr)
    rows = [parse_name(name) + (ts,) for name, ts in times.items()]
    return data.get("context", {}), rows


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def merge_fastest(rows):
    """One row per (family, arguments): the file whose median is fastest."""
    best = {}
    for family, args, ts in rows:
        key = (family, tuple(sorted(args.items())))
        if key not in best or median(ts) < median(best[key][2]):
            best[key] = (family, args, ts)
    return list(best.values())


def pick(rows, family, **want):
    """{arguments: [seconds per token per repetition]} of one family at fixed arguments."""
    return {tuple(sorted(a.items())): ts for f, a, ts in rows
            if f == family and all(a.get(k) == v for k, v in want.items())}


def series(rows, family, **want):
    """{N: seconds per token} for one family at fixed arguments."""
    out = {}
    for f, a, ts in rows:
        if f == family and all(a.get(k) == v for k, v in want.items()):
            out[a["N"]] = median(ts)
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
        dense = {(a["d"], a["s"]): median(ts) for f, a, ts in rows
                 if f == "BM_Block" + kind and a["arch"] == 0 and a["threads"] == threads}
        variants = {}
        for f, a, ts in rows:
            t = median(ts)
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


def ratio_range(dense, lookup):
    """'lo-hi x': the dense median over the slowest and the fastest repetition of the lookup."""
    lo, hi = median(dense) / max(lookup), median(dense) / min(lookup)
    return f"{lo:.1f}x" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}x"


def headline_cell(dense, lookup):
    if not lookup:
        return "-"
    return f"{median(lookup) * 1e6:.1f} ({ratio_range(dense, lookup)})"


def one(rows, family, **want):
    found = list(pick(rows, family, **want).values())
    return found[0] if found else []


def markdown(rows, threads):
    """The headline table (at most ten rows): us per token of the best dense baseline and of each
    table type, with the range of dense / lookup time over the repetitions."""
    d = layer_shape(rows)
    shape = f"d = h = {d}, tau 8, " if d is not None else ""
    lines = [f"| us per token, {shape}{threads} threads | best dense | fp32 tables | bf16 | int8 |",
             "|---|---|---|---|---|"]
    # Whole models first: generation is what an inference user measures (all threads, KV 512).
    for size, name, dense_name in ((0, "tiny", "70M"), (1, "small", "160M"), (2, "base", "410M")):
        dense = one(rows, "BM_ModelDecode", arch=0, size=size, table=0, kv=512)
        if not dense:
            continue
        cells = [f"{median(dense) * 1e6:.0f}"]
        cells += [headline_cell(dense, one(rows, "BM_ModelDecode", arch=1, size=size, table=t, kv=512)) for t in TABLES]
        lines.append(f"| model decode, MF-{name} vs Pythia-{dense_name} shape, KV 512 | " + " | ".join(cells) + " |")
    if d is None:
        return "\n".join(lines) if len(lines) > 2 else ""
    for n, cold in ((1, 1), (64, 0), (4096, 0)):
        common = dict(N=n, d=d, h=d, cold=cold, threads=threads)
        dense = min((one(rows, fam, **common) for fam in ("BM_DenseEigen", "BM_DenseBlas")),
                    key=lambda ts: median(ts) if ts else float("inf"))
        if not dense:
            continue
        cells = [f"{median(dense) * 1e6:.1f}"]
        cells += [headline_cell(dense, one(rows, "BM_MemoryLayer", tau=8, table=t, **common)) for t in TABLES]
        lines.append(f"| layer, N = {n}, {'cold' if cold else 'hot'} | " + " | ".join(cells) + " |")
    dense = one(rows, "BM_DenseBackward", N=4096, d=d, h=d, threads=threads)
    if dense:
        lookup = one(rows, "BM_MemoryLayerBackward", N=4096, d=d, h=d, tau=8, threads=threads)
        lines.append(f"| layer backward, N = 4096 | {median(dense) * 1e6:.1f} | "
                     f"{headline_cell(dense, lookup)} | - | - |")
    for kind, label in (("Forward", "block forward, s = 512"), ("Decode", "block decode step, KV 512")):
        common = dict(s=512, d=d, threads=threads)
        dense = one(rows, "BM_Block" + kind, arch=0, **common)
        if not dense:
            continue
        cells = [f"{median(dense) * 1e6:.1f}", headline_cell(dense, one(rows, "BM_Block" + kind, arch=1, **common))]
        cells += [headline_cell(dense, one(rows, f"BM_Block{kind}Compressed", table=t, **common)) for t in (1, 2)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    train = dict(d=512, layers=4, seq=256)
    dense = one(rows, "BM_TrainStep", arch=0, **train)
    if dense:
        lines.append(f"| training step, d 512, 4 layers, seq 256 | {median(dense) * 1e6:.1f} | "
                     f"{headline_cell(dense, one(rows, 'BM_TrainStep', arch=1, **train))} | - | - |")
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
