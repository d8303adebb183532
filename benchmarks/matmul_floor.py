"""The matmul floor of the DreamerV3 update: the time its matrix multiplies alone take
at their own shapes on this machine (issue 15).

    python benchmarks/matmul_floor.py                 # size 1m, both action kinds
    python benchmarks/matmul_floor.py --size XS --threads 2

Records every ``mm``, ``addmm``, ``bmm`` and ``baddbmm`` call of one update of
``benchmarks/bench_update.py``'s ``build_update`` (forward and backward) with a
dispatch mode, then replays exactly those calls on copies of their inputs and reports
the median of ``--reps`` replays next to the median of the whole update: no
implementation of the same maths can take less than the replay at these shapes
unless it changes the shapes.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.bench_update import build_update  # noqa: E402
from wmblocks.train.speed import tune_host_allocator  # noqa: E402

MATMULS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
}


def record(update) -> list:
    """The matmul calls of one ``update()``: ``(op, inputs copied, kwargs)`` each."""
    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in MATMULS:
                copies = [a.detach().clone() if torch.is_tensor(a) else a for a in args]
                calls.append((func, copies, kwargs))
            return func(*args, **kwargs)

    with Record():
        update()
    return calls


def run_calls(calls: list) -> None:
    for func, inputs, kwargs in calls:
        func(*inputs, **kwargs)


def _median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()
    tune_host_allocator()
    torch.set_num_threads(args.threads)
    for discrete in (True, False):
        update, _ = build_update(args.size, discrete=discrete)
        update()
        update()
        calls = record(update)
        replay = functools.partial(run_calls, calls)
        flops = sum(
            flop_registry[f._overloadpacket](*a, **k, out_val=f(*a, **k)) for f, a, k in calls
        )
        replay()
        floor, whole = _median_s(replay, args.reps), _median_s(update, args.reps)
        print(
            f"size {args.size}, {'discrete' if discrete else 'continuous'}, {args.threads} "
            f"threads: {len(calls)} matmul calls, {flops / 1e9:.1f} GFLOP, alone "
            f"{floor * 1e3:.0f} ms ({flops / 1e9 / floor:.0f} GFLOP/s); the whole update "
            f"{whole * 1e3:.0f} ms"
        )


if __name__ == "__main__":
    main()
