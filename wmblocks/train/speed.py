"""Speed switches of a training update: ``torch.compile``, bf16 autocast, and a guard
that the update never synchronises with the host.

A recipe splits its update into a forward function (every loss, returning the total
loss and detached metrics) and the eager rest (backward, optimiser steps, target
updates), and wraps the forward with :func:`compiled` and :func:`autocast`::

    losses = compiled(losses, use_compile(cfg.compile, device))
    with autocast(cfg.precision, device):
        loss, metrics, aux = losses(batch)
    loss.backward()

Compiling the forward also compiles its backward (AOTAutograd). The RSSM's observe and
imagination loops are left to Python on purpose (``wmblocks.nn.rssm``): torch.compile
compiles the one-step cells once and calls them T and H times, so neither the graph
nor the compile time grows with T or H. The optimiser steps are compiled apart, on
accelerators (:func:`compile_optimizers`): LaProp's maths as one compiled function of
tensors (its step count is a tensor, so it compiles once), torch's fused Adam as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wmblocks.optim import LaPropAGC

COMPILE_CHOICES = ("auto", "on", "off")
PRECISION_CHOICES = ("auto", "fp32", "bf16")


def use_compile(choice: str, device: torch.device) -> bool:
    """Whether to compile: ``"on"``, ``"off"``, or ``"auto"`` = on CUDA only (on a CPU
    the first compile costs about a minute, which a short run does not win back)."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {COMPILE_CHOICES}, got {choice!r}")
    return choice == "on" or (choice == "auto" and device.type == "cuda")


def compiled(fn: Callable, enabled: bool, **options) -> Callable:
    """``torch.compile(fn, **options)`` when ``enabled``, else ``fn`` itself.

    Shapes are static (``dynamic=False`` unless given): a recipe's batch, length and
    horizon are fixed for a run, so one specialised graph is compiled per cell. Enabling
    it also calls :func:`trust_cpu_vector_isa`.

    Calls run with dynamo's ``nested_graph_breaks``: at the RSSM scans (graph breaks
    by design, several calls deep inside a loss) tracing resumes in the function that
    called the scan instead of splitting every enclosing function into a graph before
    and a graph after it. The V3 update then compiles 7 frames, each one graph, instead
    of 21 frames with 15 graphs; in four paired runs on this 2-core CPU its cold start
    was 63-65 s against 64-77 s and its update 313-327 ms against 327-356 ms.
    """
    if not enabled:
        return fn
    trust_cpu_vector_isa()
    compiled_fn = torch.compile(fn, **{"dynamic": False, **options})

    dynamo_config = torch._dynamo.config

    @functools.wraps(fn)
    def call(*args, **kwargs):
        # Set and restored by hand: config.patch() costs ~110 us a call on this CPU,
        # half an acting step; this ~3 us.
        before = dynamo_config.nested_graph_breaks
        dynamo_config.nested_graph_breaks = True
        try:
            return compiled_fn(*args, **kwargs)
        finally:
            dynamo_config.nested_graph_breaks = before

    return call


def trust_cpu_vector_isa() -> bool:
    """Let inductor take the CPU's vector instruction set (AVX-512, AVX2, NEON, ...) from
    the CPU's feature flags instead of test-compiling and loading a probe program per
    candidate set. The probes are built without inductor's precompiled header and
    cost ~5-6 s of a cold start on this 2-core CPU (of ~60 s at size 1m; they are
    cached after); probes of extensions (AVX-512 BF16, AMX) still run where the CPU
    has them. Sets ``torch._inductor.config.cpp.vec_isa_ok = True`` only where it is
    unset (``TORCHINDUCTOR_VEC_ISA_OK=0`` in the environment keeps it, and scalar
    kernels); process-wide, so it holds for later compiles too, and inductor caches
    its choice, so it counts only before the process's first CPU compile. A compiler
    that cannot build the chosen set then fails at the first kernel, naming the flag,
    rather than falling back silently. Returns whether it changed the setting."""
    import torch._inductor.config as inductor_config

    if inductor_config.cpp.vec_isa_ok is not None:
        return False
    inductor_config.cpp.vec_isa_ok = True
    return True


def compile_optimizers(optimizers: dict, enabled: bool, device: torch.device | str) -> dict:
    """Compile the step of every optimiser in ``optimizers`` (name -> a
    :class:`~wmblocks.optim.ClippedOptimizer`) that has a compiled form, when
    ``enabled`` and ``device`` is not a CPU: :meth:`~wmblocks.optim.LaPropAGC.compile`
    (there it fuses ~20 foreach kernel launches per parameter group into a few). On a
    CPU the foreach step is kept: compiled, the 1m update measured 275-291 ms against
    279-289 ms with the foreach step (2 threads, four processes each), for ~20 s more
    of a ~60 s cold start (inductor schedules ~1,600 foreach nodes over 81 parameters).
    torch's fused Adam (V1, V2, V3-2023) is one kernel per step already and stays as it
    is. Returns ``optimizers``."""
    if enabled and torch.device(device).type != "cpu":
        for opt in optimizers.values():
            if isinstance(opt.opt, LaPropAGC):
                opt.opt.compile()
    return optimizers


def amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``"bf16"`` -> bfloat16, ``"fp32"`` -> None (no autocast),
    ``"auto"`` -> bfloat16 on CUDA devices that support it, else None."""
    if choice not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {choice!r}")
    if choice == "bf16":
        return torch.bfloat16
    if choice == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(choice: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast of the forward for ``choice`` (see :func:`amp_dtype`); parameters,
    gradients and optimiser state stay float32 (master weights). The distributions
    (:mod:`wmblocks.dists`, the latent heads) cast their logits and statistics to
    float32, so the KL, twohot and return-normaliser maths run in full precision."""
    dtype = amp_dtype(choice, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# aten ops that read a tensor's value back to the host: every .item(), bool(t), int(t),
# float(t), and data-dependent output shapes.
_SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.unique_consecutive.default,
    torch.ops.aten._unique2.default,
    torch.ops.aten.unique_dim.default,
}


class HostSyncError(RuntimeError):
    """An operation inside :func:`forbid_host_sync` read a tensor value on the host."""


class _ForbidSync(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SYNC_OPS:
            raise HostSyncError(
                f"{func} reads a tensor back to the host (on CUDA: a device "
                "synchronisation) inside a section that must not; see the traceback"
            )
        if func is torch.ops.aten._to_copy.default:
            src = args[0].device
            dst = (kwargs or {}).get("device")
            if dst is not None and torch.device(dst).type == "cpu" and src.type != "cpu":
                raise HostSyncError(f"a copy from {src} to the CPU inside a sync-free section")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid_host_sync() -> Iterator[None]:
    """Raise :class:`HostSyncError` at the first operation that reads a tensor value on
    the host (``.item()``, ``bool(t)``, ``F.one_hot``'s range check, ``nonzero``,
    ``unique``, a device-to-CPU copy) while the block runs. Eager code only: it watches
    the aten dispatcher, which a compiled graph bypasses. Used by the tests to keep
    every recipe's update free of host synchronisation."""
    with _ForbidSync():
        yield


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_host_allocator(
    mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30, top_pad: int = 16 << 20
) -> bool:
    """Keep freed host memory for reuse instead of returning it to the kernel (glibc).

    PyTorch's CPU tensors come straight from ``malloc``. glibc serves blocks above its
    mmap threshold (128 KiB at first, raised dynamically up to 32 MiB) with a fresh
    ``mmap`` and unmaps them on free, and trims the heap top above its trim threshold:
    every large activation or gradient of an update then starts as untouched pages that
    the kernel must fault in and zero. At size 1m that is about 50,000 page faults
    (~200 MB zeroed) per update, 5-20% of its time on this CPU. Raising the mmap
    threshold to 32 MiB (glibc's maximum), the trim threshold to 1 GiB and padding heap
    growth by 16 MiB makes later updates reuse the same pages: under 1,000 faults per
    update; peak memory is unchanged (the pages are the update's working set).

    Process-wide and irreversible; call it once at start-up (the training loop and the
    benchmarks do). Returns False, changing nothing, where the C library is not glibc.
    Setting only the trim threshold, without the mmap threshold, would freeze the mmap
    threshold at 128 KiB and fault far more (glibc stops adjusting it): all three are
    set together or none.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    done = [
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold),
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold),
        libc.mallopt(_M_TOP_PAD, top_pad),
    ]
    return all(r == 1 for r in done)
