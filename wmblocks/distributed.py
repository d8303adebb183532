"""Data-parallel training over processes (``torchrun``): the process group and the few
collectives the loop, the optimisers and the cross-sample statistics use.

    torchrun --nproc-per-node N recipes/dreamer_v3.py ...

Every rank collects into its own replay and trains on its own batch ``[B, T]``; the
gradients are averaged before each optimiser step (:func:`average_gradients`), so the
N ranks take the step of one global batch ``[N B, T]``, and the statistics taken across
samples (DreamerV3's return percentiles, V1/V2's free nats on the batch mean) are taken
over the global batch (:func:`all_gather_cat`, :func:`mean_over_ranks`). See
docs/scaling.md.

Without a process group (a plain ``python recipes/...`` run, or ``WORLD_SIZE`` 1) this
is rank 0 of a world of 1: every helper returns its input and calls no collective, so
a single process runs exactly as it would without this module. It imports only torch,
so every layer may use it (:class:`~wmblocks.nn.normalize.ReturnNormalizer`,
:func:`~wmblocks.functional.kl.free_nats`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

# Evaluation runs on rank 0 alone while the other ranks wait in their next collective:
# the wait must not time out (torch's default is 10 minutes for NCCL).
TIMEOUT = datetime.timedelta(minutes=60)
# Gradients are all-reduced in flat buckets of at most this many bytes (one collective
# each; 64 MiB: the 200m preset, 654 MB, takes about 10).
BUCKET_BYTES = 64 * 2**20
# Ranks r > 0 reseed torch with seed + RANK_SEED_STRIDE * r after the build (a prime).
RANK_SEED_STRIDE = 7919

_host_group: Any = None  # gloo group for host values (the default group when it is gloo)


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment when
    ``WORLD_SIZE`` > 1 (``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and
    return this rank's device: ``cuda:LOCAL_RANK`` (backend NCCL, plus a gloo group for
    host values) when ``device`` is CUDA, else ``device`` (backend gloo). ``WORLD_SIZE``
    unset or 1: nothing happens and ``device`` is returned. An existing process group
    is kept (a caller that made its own)."""
    global _host_group
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not _initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not _initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    if _host_group is None:
        gloo = dist.get_backend() == "gloo"
        _host_group = dist.group.WORLD if gloo else dist.new_group(backend="gloo", timeout=TIMEOUT)
    return device


def shutdown() -> None:
    """Leave the process group (when there is one); the end of a run."""
    global _host_group
    if _initialized():
        dist.destroy_process_group()
    _host_group = None


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """N, the number of ranks (1 without a process group)."""
    return dist.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's rank r in [0, N) (0 without a process group)."""
    return dist.get_rank() if _initialized() else 0


def is_main() -> bool:
    """Rank 0: the one that writes the run's metrics, plots, videos, evaluations and
    checkpoints."""
    return rank() == 0


def reseed_rank(seed: int) -> None:
    """After the build (the same parameters everywhere): ranks r > 0 reseed torch with
    ``seed + 7919 r``, so their replay sampling and imagination noise differ; rank 0
    keeps its generator as it is (a single-process run's stream)."""
    if rank() > 0:
        torch.manual_seed(seed + RANK_SEED_STRIDE * rank())


@torch.no_grad()
def broadcast_modules(modules: Iterable[nn.Module]) -> None:
    """Every tensor of every module's ``state_dict`` (parameters and buffers) set to
    rank 0's value, in place: the ranks start identical whatever their generators did."""
    if world_size() == 1:
        return
    for module in modules:
        for value in module.state_dict().values():
            if isinstance(value, Tensor):
                dist.broadcast(value, src=0)


def _buckets(tensors: list[Tensor], cap: int = BUCKET_BYTES) -> list[list[Tensor]]:
    """``tensors`` cut into consecutive runs of one dtype and device of at most ``cap``
    bytes each (a larger tensor is a bucket of its own)."""
    buckets: list[list[Tensor]] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        last = buckets[-1][-1] if buckets else None
        same = last is not None and (last.dtype, last.device) == (t.dtype, t.device)
        if not same or size + nbytes > cap:
            buckets.append([])
            size = 0
        buckets[-1].append(t)
        size += nbytes
    return buckets


@torch.no_grad()
def average_gradients(params: Iterable[Tensor], loss: Tensor) -> Tensor:
    """The gradients of ``params`` averaged over the N ranks, in place, and the mean
    loss over the ranks, ``[]``:

        g <- (1/N) sum_r g_r        loss <- (1/N) sum_r loss_r

    With equal local batches, the mean of the local mean losses is the mean loss of the
    global batch ``[N B, T]``, and g its gradient: data-parallel SGD (as the DreamerV3
    reference's ``pmean`` of the gradients over devices). The loss rides in the last
    bucket (no extra collective); it is non-finite as soon as one rank's is, so that
    :func:`~wmblocks.optim.step_if_finite` skips on every rank alike. The gradients are
    flattened into a few buckets (:data:`BUCKET_BYTES`), all-reduced (sum)
    asynchronously and copied back divided by N; no host sync on CUDA. The parameters
    with a gradient must be the same on every rank (they are: the same graph).

    Without a process group: returns ``loss`` and calls nothing.
    """
    world = world_size()
    if world == 1:
        return loss
    unique = {id(p): p for p in params}  # optimisers may share parameters
    grads = [p.grad for p in unique.values() if p.grad is not None]
    dtype = grads[-1].dtype if grads else torch.float32
    mean_loss = loss.detach().reshape(1).to(dtype, copy=True)
    pending = []
    for bucket in _buckets([*grads, mean_loss]):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        pending.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
    for bucket, flat, work in pending:
        work.wait()
        flat.div_(world)
        parts = flat.split([t.numel() for t in bucket])
        torch._foreach_copy_(bucket, [v.view_as(t) for v, t in zip(parts, bucket, strict=True)])
    return mean_loss.reshape(())


def all_gather_cat(x: Tensor) -> Tensor:
    """Every rank's ``x`` concatenated in rank order along dim 0: ``[N n, ...]`` from
    ``[n, ...]`` (equal shapes on every rank); no gradient. Traceable by torch.compile
    (a functional collective). Without a process group: ``x``."""
    if world_size() == 1:
        return x
    from torch.distributed import _functional_collectives as funcol

    return funcol.all_gather_single(x.detach().contiguous(), 0, dist.group.WORLD)


def mean_over_ranks(x: Tensor) -> Tensor:
    """``(1/N) sum_r x_r`` (any shape, the same on every rank); no gradient. Traceable by
    torch.compile. Without a process group: ``x``."""
    world = world_size()
    if world == 1:
        return x
    from torch.distributed import _functional_collectives as funcol

    return funcol.all_reduce(x.detach().contiguous(), "sum", dist.group.WORLD) / world


def mean_metrics(metrics: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each ``[]`` metric averaged over the ranks, in one collective (the loop's logged
    losses are then those of the global batch; rank-identical values such as gradient
    norms stay as they are). Without a process group: ``metrics``."""
    if world_size() == 1 or not metrics:
        return metrics
    names = list(metrics)
    stacked = torch.stack([metrics[k].detach().float().reshape(()) for k in names])
    dist.all_reduce(stacked)
    return dict(zip(names, (stacked / world_size()).unbind(), strict=True))


def sum_ints(*values: int) -> tuple[int, ...]:
    """Each host integer summed over the ranks (one collective on the host group), e.g.
    the environment frames of one step of every rank. Without a process group: the
    values themselves."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(t, group=_host_group)
    return tuple(int(v) for v in t.tolist())


def gather_objects(obj: Any) -> list | None:
    """Every rank's picklable ``obj``, in rank order, on rank 0 (``None`` on the other
    ranks); ``[obj]`` without a process group. A collective: it returns on rank 0 once
    every rank has called it (what the checkpoint needs after each rank's replay
    flush)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0, group=_host_group)
    return out
