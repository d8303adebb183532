"""Time wmblocks' DreamerV3 update against torchrl's, side by side, in one run.

    python benchmarks/compare.py                          # size 1m, B16 T64 H15, 3 rounds
    python benchmarks/compare.py --sizes 1m XS --rounds 5 --compile
    python benchmarks/compare.py --threads 2 --reps 10 --out docs/compare.md
    python benchmarks/compare.py --sheeprl                # also sheeprl 0.8.4, own venv
    python benchmarks/compare.py --compile --sheeprl-compile   # and sheeprl-2024 compiled

Each measurement is a fresh subprocess (one implementation at a time, nothing else
running), and the rounds interleave the implementations so a slow period of the
machine hits all of them alike. A worker builds the update (wmblocks:
``benchmarks/bench_update.py``'s ``build_update``, i.e. the recipe's own update;
torchrl: ``benchmarks/peers/torchrl_v3.py``, torchrl's DreamerV3 modules and losses
at the same widths), runs ``--warmup`` updates (the first one also compiles), then
times ``--reps`` updates and reports their median, the first call's time, the peak
resident memory, and the FLOPs of one update (``torch.utils.flop_counter``, counted
on the eager update: compilation does not change the maths). A matmul worker measures
this machine's float32 matmul peak in the same run, so GFLOP/s can be read against it.
Every worker gets the same glibc malloc settings: by default those the training loop
sets (``--allocator tuned``: freed memory is reused instead of unmapped, which saves
~50,000 page faults per update at 1m), or glibc's own (``--allocator stock``).
The table reports the median over rounds of each worker's median.

With ``--sheeprl`` the rounds also time sheeprl 0.8.4's DreamerV3 update
(``benchmarks/peers/sheeprl_v3.py``; "sheeprl" is its classic ``dreamer_v3``, whose
1m has a full GRU and twice the parameters, "sheeprl-2024" its ``dreamer_v3_5``, the
2024 design with exactly wmblocks' parameter counts), run by the Python of a virtual environment of
its own (``--sheeprl-venv``; created by ``benchmarks/peers/sheeprl_venv.sh`` with
torch pinned to this one's version when missing): sheeprl is never imported here.
``--sheeprl-compile`` adds sheeprl-2024 with its own ``algo.compile`` (its losses
compiled by ``torch.compile``, default mode).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SETUP = {"batch": 16, "length": 64, "horizon": 15, "obs": 24, "actions": 6}

# glibc's malloc settings of ``wmblocks.train.speed.tune_host_allocator`` (which the
# training loop applies), as environment variables so that every implementation's
# worker, sheeprl's venv included, runs with the same allocator.
TUNED_ALLOCATOR = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(16 << 20),
}


def count_flops(update) -> int:
    """FLOPs of one ``update()``: torch.utils.flop_counter's per-op formulas (matmuls,
    convolutions, attention, forward and backward), summed by a dispatch mode of our
    own: FlopCounterMode's module tracker cannot walk torchrl's TensorDict modules."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += formula(*args, **kwargs, out_val=out)
            return out

    with Count():
        update()
    return Count.total


def time_update(update, start: float, warmup: int, reps: int) -> dict:
    """Run ``warmup`` updates, then time ``reps``: ``median_s`` (None without reps),
    ``first_s`` (from ``start``, a ``time.perf_counter()`` taken before building, to the
    end of the first update) and the process's ``peak_rss_mb``."""
    first = None
    for i in range(warmup):
        update()
        if i == 0:
            first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        update()
        times.append(time.perf_counter() - t)
    return {
        "median_s": statistics.median(times) if times else None,
        "first_s": first,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _build(impl: str, size: str, discrete: bool, compiled: bool):
    if impl == "wmblocks":
        from benchmarks.bench_update import build_update

        return build_update(size, discrete=discrete, compile="on" if compiled else "off", **SETUP)
    if impl == "torchrl":
        from benchmarks.peers.torchrl_v3 import build

        s = SETUP
        return build(size, s["batch"], s["length"], s["horizon"], s["obs"], s["actions"], discrete)
    raise ValueError(f"unknown implementation {impl!r}")


def worker(args) -> dict:
    """One measurement in this process; returns the row as a dict."""
    import torch

    torch.set_num_threads(args.threads)
    if args.impl == "matmul":
        n = 2048
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(10):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return {"gflops_peak": 2 * n**3 / statistics.median(times) / 1e9}
    start = time.perf_counter()
    update, params = _build(args.impl, args.size, args.discrete, args.compiled)
    row = {**time_update(update, start, args.warmup, args.reps), "params": params}
    if not args.compiled:
        row["flops"] = count_flops(update)
    return row


def sheeprl_python(venv: str) -> str:
    """The sheeprl venv's interpreter, creating the venv first when it is missing."""
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        script = os.path.join(ROOT, "benchmarks", "peers", "sheeprl_venv.sh")
        print(f"creating the sheeprl venv at {venv} ({script})", flush=True)
        subprocess.run(["bash", script, venv], check=True)
    return python


def run_worker(impl: str, size: str, discrete: bool, compiled: bool, args) -> dict:
    common = ["--threads", str(args.threads), "--reps", str(args.reps)]
    common += ["--warmup", str(args.warmup)] + (["--discrete"] if discrete else [])
    if impl.startswith("sheeprl"):  # sheeprl: its DreamerV3; sheeprl-2024: its dreamer_v3_5
        script = os.path.join(ROOT, "benchmarks", "peers", "sheeprl_v3.py")
        algo = "dreamer_v3_5" if impl == "sheeprl-2024" else "dreamer_v3"
        cmd = [sheeprl_python(args.sheeprl_venv), script, "--size", size, "--algo", algo]
        cmd += common + (["--compile"] if compiled else [])
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--sizes", size]
        cmd += common + (["--compile"] if compiled else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.allocator == "tuned":
        env |= TUNED_ALLOCATOR
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {impl} {size} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["1m"], help="wmblocks size presets")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10, help="timed updates per worker")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--discrete", action="store_true", help="only discrete actions")
    parser.add_argument("--continuous", action="store_true", help="only continuous actions")
    parser.add_argument("--compile", action="store_true", help="also wmblocks compiled")
    parser.add_argument("--sheeprl", action="store_true", help="also sheeprl 0.8.4 (own venv)")
    parser.add_argument(
        "--sheeprl-compile",
        action="store_true",
        help="also sheeprl-2024 with its algo.compile (implies --sheeprl)",
    )
    parser.add_argument(
        "--sheeprl-venv", default=os.path.join(os.path.dirname(ROOT), "sheeprl-venv")
    )
    parser.add_argument(
        "--allocator",
        default="tuned",
        choices=["tuned", "stock"],
        help="glibc malloc settings for every worker alike: tuned = the training loop's "
        "(wmblocks.train.speed.tune_host_allocator), stock = glibc's defaults",
    )
    parser.add_argument("--out", default="", help="also write the table (markdown) here")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.impl, args.size, args.compiled = args.worker, args.sizes[0], args.compile
        print(json.dumps(worker(args)))
        return

    kinds = [True, False]
    if args.discrete != args.continuous:
        kinds = [args.discrete]
    runs = [("wmblocks", False), ("torchrl", False)]
    runs += [("wmblocks", True)] if args.compile else []
    args.sheeprl = args.sheeprl or args.sheeprl_compile
    runs += [("sheeprl", False), ("sheeprl-2024", False)] if args.sheeprl else []
    runs += [("sheeprl-2024", True)] if args.sheeprl_compile else []
    results: dict[tuple, list[dict]] = {}
    peaks = []
    for r in range(args.rounds):
        peaks.append(run_worker("matmul", "1m", False, False, args)["gflops_peak"])
        for size in args.sizes:
            for discrete in kinds:
                for impl, compiled in runs:
                    row = run_worker(impl, size, discrete, compiled, args)
                    results.setdefault((size, discrete, impl, compiled), []).append(row)
                    print(
                        f"round {r + 1}: {impl:8s} {'compiled' if compiled else 'eager':8s} "
                        f"{size} {'discrete' if discrete else 'continuous'}: "
                        f"{row['median_s'] * 1000:.0f} ms",
                        flush=True,
                    )
    peak = statistics.median(peaks)
    lines = [
        f"Threads {args.threads}, B{SETUP['batch']} T{SETUP['length']} H{SETUP['horizon']}, "
        f"vector obs {SETUP['obs']}, {SETUP['actions']} actions; median over {args.rounds} "
        f"interleaved rounds of the median of {args.reps} updates; float32 matmul peak "
        f"measured in the same run: {peak:.0f} GFLOP/s; {args.allocator} glibc allocator "
        "for every implementation.",
        "",
        "| size | actions | implementation | ms / update | vs torchrl eager | "
        "first call s | GFLOP / update | GFLOP/s (% of peak) | params | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in args.sizes:
        for discrete in kinds:
            base = statistics.median(
                x["median_s"] for x in results[(size, discrete, "torchrl", False)]
            )
            flops = {
                impl: statistics.median(x["flops"] for x in results[(size, discrete, impl, False)])
                for impl, compiled in runs
                if not compiled
            }
            for impl, compiled in runs:
                rows = results[(size, discrete, impl, compiled)]
                med = statistics.median(x["median_s"] for x in rows)
                gflop = flops[impl] / 1e9
                rate = gflop / med
                lines.append(
                    f"| {size} | {'discrete' if discrete else 'continuous'} | {impl}"
                    f"{' compiled' if compiled else ''} | {med * 1000:.0f} | {base / med:.2f}x | "
                    f"{statistics.median(x['first_s'] for x in rows):.1f} | {gflop:.1f} | "
                    f"{rate:.0f} ({100 * rate / peak:.0f}%) | {rows[0]['params'] / 1e6:.2f} M | "
                    f"{max(x['peak_rss_mb'] for x in rows):.0f} |"
                )
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
