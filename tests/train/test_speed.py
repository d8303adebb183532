"""The speed switches of a training update (wmblocks.train.speed): no host
synchronisation inside any recipe's update, bf16 autocast close to float32, and
torch.compile giving the eager losses, parameters and actions without graph breaks
beyond the two designed ones (the RSSM loops, left to Python)."""

import contextlib
import platform
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from tests.helpers import random_batch, with_context
from tests.recipes.common import AGENTS
from tests.recipes.test_blocks import build
from wmblocks.optim import ClippedOptimizer, LaPropAGC, laprop_agc_step_
from wmblocks.train.acting import LatentPolicy
from wmblocks.train.speed import (
    HostSyncError,
    amp_dtype,
    compile_optimizers,
    forbid_host_sync,
    trust_cpu_vector_isa,
    use_compile,
)


def test_forbid_host_sync_catches_reads_of_tensor_values():
    x = torch.randn(4)
    for read in (
        lambda: x.sum().item(),
        lambda: bool(x.sum() > 0),
        lambda: F.one_hot(torch.tensor([1, 2]), 3),  # checks the index range on the host
        lambda: torch.nonzero(x),
    ):
        with pytest.raises(HostSyncError), forbid_host_sync():
            read()
    with forbid_host_sync():  # plain device maths passes
        (x.softmax(-1) * 2).cumsum(-1)


@pytest.mark.parametrize(("recipe", "env_id", "args"), AGENTS)
def test_updates_never_synchronise_with_the_host(recipe, env_id, args):
    agent, env = build(recipe, env_id, *args, "--compile", "off")
    batch = with_context(random_batch(env.obs_shapes, env.action_dim, B=3, T=6), agent)
    agent.update(batch.clone())  # first update: lazy state (optimiser moments)
    with forbid_host_sync():
        metrics = agent.update(batch.clone())
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in metrics.values())


@pytest.mark.parametrize(("recipe", "env_id", "args"), AGENTS)
def test_bf16_autocast_stays_close_to_float32(recipe, env_id, args):
    torch.manual_seed(0)
    fp32, env = build(recipe, env_id, *args, "--precision", "fp32")
    torch.manual_seed(0)
    bf16, _ = build(recipe, env_id, *args, "--precision", "bf16")
    batch = with_context(random_batch(env.obs_shapes, env.action_dim, B=3, T=6), fp32)
    for _ in range(2):
        torch.manual_seed(1)
        ref = fp32.update(batch.clone())
        torch.manual_seed(1)
        low = bf16.update(batch.clone())
    for name, value in ref.items():
        assert low[name].dtype == torch.float32, name  # the loss maths stays float32
        assert torch.isfinite(low[name]).all(), name
        torch.testing.assert_close(low[name], value, rtol=0.05, atol=0.02, msg=name)
    for p, q in zip(fp32.wm.parameters(), bf16.wm.parameters(), strict=True):
        assert q.dtype == torch.float32  # master weights
        torch.testing.assert_close(q, p, rtol=0.0, atol=5e-3)  # two Adam steps of lr <= 1e-3


def test_choices_resolve_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_compile("auto", cpu) and use_compile("auto", cuda)
    assert use_compile("on", cpu) and not use_compile("off", cuda)
    assert amp_dtype("auto", cpu) is None and amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="compile must be one of"):
        use_compile("yes", cpu)


def _graph_breaks() -> list[str]:
    """The reasons of the graph breaks dynamo met (one entry per distinct reason)."""
    return list(counters["graph_break"])


@pytest.mark.parametrize(
    ("recipe", "env_id", "args", "given_up"),
    [
        ("dreamer_v3", "CartPole-v1", (), 0),  # 2024: REINFORCE, everything compiled
        # 2023 continuous: dynamics backprop freezes the world model and critic with
        # gradients on; dynamo gives up on that one small frame (frozen_call) only.
        ("dreamer_v3", "Pendulum-v1", ("--revision", "2023"), 1),
        ("dreamer_v2", "CartPole-v1", (), 0),
        ("dreamer_v1", "Pendulum-v1", (), 1),
    ],
)
@torch._inductor.config.patch(fallback_random=True)  # eager's RNG
@torch._dynamo.config.patch(error_on_recompile=True)  # one graph per cell and frame
def test_compiled_update_and_acting_equal_eager(recipe, env_id, args, given_up):
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager, env = build(recipe, env_id, *args, "--compile", "off")
    torch.manual_seed(0)
    fast, _ = build(recipe, env_id, *args, "--compile", "on")
    batch = with_context(random_batch(env.obs_shapes, env.action_dim, B=3, T=6), eager)
    for i in range(3):
        torch.manual_seed(i)
        ref = eager.update(batch.clone())
        torch.manual_seed(i)
        out = fast.update(batch.clone())
        for name, value in ref.items():
            torch.testing.assert_close(out[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for p, q in zip(eager.wm.parameters(), fast.wm.parameters(), strict=True):
        # atol 1e-5: Adam's normalised step turns a rounding-size gradient difference
        # on a near-zero gradient into a step difference of up to ~lr (V1).
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    breaks = [k for k in _graph_breaks() if "requires_grad_" not in k or not given_up]
    assert all("torch.compiler.disable" in k for k in breaks), breaks  # only the two scans
    skipped = {re.search(r"<function (\S+) at", k).group(1) for k in breaks}
    assert sorted(skipped) == [
        "RSSM._imagine_scan",
        "RSSM._observe_scan",
    ]
    # Every frame dynamo met compiled whole (a frame given up runs eagerly, its callees
    # compiled one by one), but for frozen_call's with dynamics backprop.
    frames = counters["frames"]
    assert frames["total"] - frames["ok"] == given_up, dict(frames)
    assert len(counters["unimplemented"]) == given_up, list(counters["unimplemented"])

    obs = {k: torch.randn(2, *shape) for k, shape in env.obs_shapes.items()}
    first = torch.tensor([True, False])
    slow = LatentPolicy(eager.wm, eager.actor, env.action_dim, env.discrete)
    compiled = LatentPolicy(eager.wm, eager.actor, env.action_dim, env.discrete, compile=True)
    for step in range(3):
        torch.manual_seed(10 + step)
        a = slow(obs, first)
        torch.manual_seed(10 + step)
        b = compiled(obs, first)
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(compiled.latent[0], slow.latent[0], rtol=1e-5, atol=1e-6)
        first = torch.tensor([False, False])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch._inductor.config.patch(fallback_random=True)  # eager's RNG
def test_cuda_update_compiled_equals_eager_and_never_synchronises():
    """On a GPU: the compiled V3 update equals the eager one, and neither waits for the
    device inside an update (CUDA's own sync check, which also sees compiled code)."""
    torch._dynamo.reset()
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    eager, env = build("dreamer_v3", "CartPole-v1", "--compile", "off", device=cuda)
    torch.manual_seed(0)
    fast, _ = build("dreamer_v3", "CartPole-v1", "--compile", "on", device=cuda)
    batch = with_context(random_batch(env.obs_shapes, env.action_dim, B=3, T=6), eager)
    batch = batch.to(cuda)
    for i in range(3):
        torch.manual_seed(i)
        with forbid_host_sync() if i else contextlib.nullcontext():
            ref = eager.update(batch.clone())
        torch.manual_seed(i)
        if i:  # the first call compiles (and builds the optimisers' state)
            torch.cuda.set_sync_debug_mode("error")
        try:
            out = fast.update(batch.clone())
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for name, value in ref.items():
            assert value.is_cuda, name
            torch.testing.assert_close(out[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for p, q in zip(eager.wm.parameters(), fast.wm.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


_MALLINFO = """
import ctypes, sys, torch
from wmblocks.train.speed import tune_host_allocator

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
applied = tune_host_allocator() if sys.argv[1] == "tuned" else None
before = libc.mallinfo2()
x = torch.empty(4 << 20)  # a 16 MiB activation
held = libc.mallinfo2()
del x
freed = libc.mallinfo2()
mib = 1 << 20
print(applied, (held.hblkhd - before.hblkhd) // mib, (freed.arena - before.arena) // mib)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_tuned_allocator_keeps_large_tensors_in_the_reusable_heap():
    """Stock glibc serves a fresh process's 16 MiB tensor with its own mmap (unmapped
    on free, so the next one is faulted in and zeroed again); tuned, it comes from the
    heap and stays there when freed. (The page faults this saves per update are
    measured by benchmarks/bench_update.py --stock-allocator.)"""

    def run(mode):
        out = subprocess.run(
            [sys.executable, "-c", _MALLINFO, mode], capture_output=True, text=True, check=True
        )
        applied, mapped, heap_kept = out.stdout.split()
        return applied, int(mapped), int(heap_kept)

    stock, tuned = run("stock"), run("tuned")
    assert stock[1] >= 16, stock  # its own mapping
    assert tuned[0] == "True" and tuned[1] == 0, tuned  # from the heap
    assert tuned[2] >= 16, tuned  # and the heap keeps it after the free


def test_optimizer_steps_compile_on_accelerators_only():
    """On a CPU the foreach LaProp step is kept (as fast, ~20 s less compile); on any
    other device it is compiled (lazily: nothing runs here, so no GPU is needed)."""

    def opts():
        p = torch.nn.Parameter(torch.randn(3))
        return {"all": ClippedOptimizer([p], LaPropAGC([p]), clip=0.0)}

    kept = compile_optimizers(opts(), True, torch.device("cpu"))
    assert kept["all"].opt._step_fn is laprop_agc_step_
    off = compile_optimizers(opts(), False, torch.device("cuda"))
    assert off["all"].opt._step_fn is laprop_agc_step_
    fast = compile_optimizers(opts(), True, torch.device("cuda"))
    assert fast["all"].opt._step_fn is not laprop_agc_step_


def test_vector_isa_trusted_only_where_unset():
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.vec_isa_ok": None}):
        assert trust_cpu_vector_isa() and inductor_config.cpp.vec_isa_ok is True
        assert not trust_cpu_vector_isa()  # already set
    with inductor_config.patch({"cpp.vec_isa_ok": False}):  # TORCHINDUCTOR_VEC_ISA_OK=0
        assert not trust_cpu_vector_isa() and inductor_config.cpp.vec_isa_ok is False
