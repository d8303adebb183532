"""Data-parallel training over processes (torchrun, gloo on CPU; docs/scaling.md).

In-process, two ranks forked with a gloo group, each training the recipes' own agents on
its own synthetic batches, against a single process that has no process group:

- the ranks stay bit-identical after every update (V1, V2, V3), and the return
  normaliser's state is the same on both;
- V1 (``--free-nats 0``, so no batch-mean threshold is involved): the ranks' parameters
  equal those of one process that computes each rank's loss on that rank's batch with
  that rank's generator state, averages the two gradients (the gradient of the mean
  loss over the concatenated [2B] batch) and steps once, after every update;
- the cross-sample statistics are global: the V3 return normaliser's state equals a
  single process's on the concatenated returns, and V1/V2's free nats test the mean
  over both batches; a non-finite loss on one rank skips the step on both.

End to end: ``torchrun --nproc-per-node 2 recipes/dreamer_v3.py`` writes one metrics
file and a checkpoint with both ranks' replay positions; ``--resume`` continues on two
ranks (forked, each running the recipe's ``run`` with torchrun's environment variables:
the same code path without two more interpreter start-ups), and one process is refused
resuming it.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

import wmblocks.optim
from tests.helpers import random_batch, with_context
from tests.recipes.common import ROOT, TINY, load
from wmblocks import distributed
from wmblocks.functional.kl import free_nats
from wmblocks.nn.normalize import ReturnNormalizer
from wmblocks.train.config import parse_config
from wmblocks.train.envs import Envs
from wmblocks.train.loop import run

UPDATES = 3
B, T = 2, 8
# (recipe, environment, extra flags)
AGENTS = {
    "v1": ("dreamer_v1", "Pendulum-v1", ("--free-nats", "0")),
    "v2": ("dreamer_v2", "CartPole-v1", ()),
    "v3": ("dreamer_v3", "CartPole-v1", ()),
}


def _agent(name: str):
    recipe, env_id, extra = AGENTS[name]
    module = load(recipe)
    args = [*TINY[recipe], "--batch", str(B), "--length", str(T), "--compile", "off", *extra]
    cfg = parse_config(module.Config, args)
    env = Envs(env_id)
    torch.manual_seed(0)
    agent = module.build(cfg, env, torch.device("cpu"))
    env.close()
    return agent, env


def _batch(agent, env, rank: int, update: int):
    """Rank ``rank``'s batch of update ``update`` (different on every rank)."""
    T1 = T + agent.replay_context
    batch = random_batch(env.obs_shapes, env.action_dim, B=B, T=T1, seed=100 * update + rank)
    return with_context(batch, agent)


def _state(agent) -> dict[str, torch.Tensor]:
    return {
        f"{n}.{k}": v.detach().clone()
        for n, m in agent.modules.items()
        for k, v in m.state_dict().items()
        if isinstance(v, torch.Tensor)
    }


def _returns(rank: int, i: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(10 * i + rank)
    return torch.randn(4, 5, generator=g) * (rank + 1) + 3 * rank


def _as_rank(rank: int, port: int) -> None:
    """The environment torchrun gives rank ``rank`` of 2 (one thread)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    torch.set_num_threads(1)


def _fork(fn, *args) -> None:
    """``fn(rank, port, *args)`` in two forked processes (the modules already imported
    here are inherited: no start-up), failing if either fails."""
    mp.start_processes(fn, args=(_free_port(), *args), nprocs=2, start_method="fork")


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: its results to ``out/rank<r>.pt``."""
    _as_rank(rank, port)
    distributed.init_from_env(torch.device("cpu"))
    try:
        res: dict = {"world": distributed.world_size(), "rank": distributed.rank()}
        norm = ReturnNormalizer()
        for i in range(2):
            norm.update(_returns(rank, i))
        res["normalizer"] = norm.state()
        kl = torch.full((3, 4), 1.0 if rank == 0 else 4.0, requires_grad=True)
        clipped = free_nats(kl, 2.0)  # local mean 1 or 4, global 2.5 >= 2: the KL passes
        clipped.sum().backward()
        res["free_nats"] = (clipped.detach(), kl.grad)
        res["skips"] = _skip_decisions(rank)
        for name in AGENTS:
            agent, env = _agent(name)
            distributed.broadcast_modules(agent.modules.values())
            distributed.reseed_rank(0)
            states = []
            for u in range(UPDATES):
                metrics = agent.update(_batch(agent, env, rank, u))
                assert not bool(metrics["train/skipped"])
                states.append(_state(agent))
            res[name] = states
        torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


def _skip_decisions(rank: int) -> list[bool]:
    """``step_if_finite`` with a NaN only on rank 1: in the loss alone (finite
    gradients), then in a gradient; returns the skip flags (the same on both ranks)."""
    flags = []
    for where in ("loss", "grad"):
        p = torch.nn.Parameter(torch.ones(3))
        opt = wmblocks.optim.adam([p], wmblocks.optim.V2_OPTIM["model"])
        bad = float("nan") if rank == 1 else 0.0
        loss = (p * (1.0 + (bad if where == "grad" else 0.0))).square().sum()
        loss = loss + (bad if where == "loss" else 0.0)
        loss.backward()
        skipped, _ = wmblocks.optim.step_if_finite({"m": opt}, loss)
        assert torch.equal(p.detach(), torch.ones(3))  # no step on either rank
        flags.append(bool(skipped))
    return flags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference_v1(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """One process, no process group: per update, each rank's loss on its batch with
    its generator state, the two gradients averaged, one step."""
    module = load("dreamer_v1")
    agent, env = _agent("v1")  # torch.manual_seed(0): the ranks' initial parameters
    rng = [torch.get_rng_state(), torch.manual_seed(7919).get_state()]  # rank 0, rank 1
    captured: list[tuple[dict, torch.Tensor]] = []

    def capture(optimizers, loss):
        params = {id(p): p for o in optimizers.values() for p in o.params}
        captured.append(({k: p.grad for k, p in params.items()}, loss.detach()))
        for p in params.values():
            p.grad = None
        return torch.tensor(False), {name: torch.zeros(()) for name in optimizers}

    params = {id(p): p for o in agent.optimizers.values() for p in o.params}
    states = []
    for u in range(UPDATES):
        captured.clear()
        with monkeypatch.context() as m:
            m.setattr(module, "step_if_finite", capture)
            for r in range(2):
                torch.set_rng_state(rng[r])
                agent.update(_batch(agent, env, r, u))
                rng[r] = torch.get_rng_state()
        (g0, l0), (g1, l1) = captured
        for k, p in params.items():
            p.grad = None if g0[k] is None else (g0[k] + g1[k]) / 2
        skipped, _ = wmblocks.optim.step_if_finite(agent.optimizers, (l0 + l1) / 2)
        assert not bool(skipped)
        states.append(_state(agent))
    return states


def test_two_ranks_train_as_one_process_on_the_concatenated_batch(tmp_path, monkeypatch):
    for recipe, _, _ in AGENTS.values():
        load(recipe)  # imported before the fork: the ranks inherit the modules
    _fork(_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert (r0["world"], r0["rank"], r1["rank"]) == (2, 0, 1)
    # Bit-identical ranks after every update, and the parameters moved.
    for name in AGENTS:
        for u in range(UPDATES):
            a, b = r0[name][u], r1[name][u]
            differ = [k for k in a if not torch.equal(a[k], b[k])]
            assert not differ, f"{name} update {u}: ranks differ in {differ[:5]}"
        assert any(not torch.equal(r0[name][0][k], r0[name][-1][k]) for k in r0[name][0])
    # V1 against the single-process reference (float tolerance).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = _reference_v1(monkeypatch)
    finally:
        torch.set_num_threads(threads)
    for u in range(UPDATES):
        for k, v in reference[u].items():
            torch.testing.assert_close(r0["v1"][u][k], v, rtol=1e-5, atol=1e-6, msg=k)
    # The return normaliser: one process on the concatenated returns.
    single = ReturnNormalizer()
    for i in range(2):
        single.update(torch.cat([_returns(r, i).reshape(-1) for r in range(2)]))
    for res in (r0, r1):
        assert all(
            torch.equal(x, y) for x, y in zip(res["normalizer"], single.state(), strict=True)
        )
    # Free nats on the global mean (2.5 >= 2): both ranks keep their KL and its gradient.
    for res, value in ((r0, 1.0), (r1, 4.0)):
        clipped, grad = res["free_nats"]
        assert torch.equal(clipped, torch.full((3, 4), value))
        assert torch.equal(grad, torch.ones(3, 4))
    # A NaN on rank 1 only, in the loss or in a gradient: both ranks skip.
    assert r0["skips"] == r1["skips"] == [True, True]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    cmd += ["2", os.path.join(ROOT, "recipes", "dreamer_v3.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _recipe_rank(rank: int, port: int, argv: list[str]) -> None:
    """Rank ``rank`` of ``torchrun --nproc-per-node 2 recipes/dreamer_v3.py ARGV``."""
    _as_rank(rank, port)
    module = load("dreamer_v3")
    run(module.Config, module.build, name="dreamer_v3", argv=argv, suites=module.SUITES)


def test_torchrun_trains_checkpoints_and_resumes_on_two_ranks(tmp_path, capsys):
    d = str(tmp_path / "run")
    args = ["--size", "debug", "--env", "CartPole-v1", "--batch", "2", "--length", "8"]
    args += ["--train-ratio", "8", "--prefill", "24", "--log-every", "40", "--eval-every", "0"]
    args += ["--eval-episodes", "1", "--compile", "off", "--logdir", d]
    _torchrun(*args, "--steps", "80")
    # Rank 0 writes the run; rank 1 only its replay.
    assert sorted(os.listdir(d)) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "replay",
        "replay_rank1",
        "returns.png",
    ]
    ckpt = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["count"]["steps"] >= 80
    added = [r["added"] for r in ckpt["ranks"]]
    # Lockstep: one row per rank and step; the global count sums the ranks' frames.
    assert added[0] == added[1] == ckpt["replay"]["added"]
    assert 40 <= added[0] <= ckpt["count"]["steps"] and ckpt["count"]["updates"] > 0
    assert not torch.equal(ckpt["ranks"][0]["rng"]["torch"], ckpt["ranks"][1]["rng"]["torch"])
    with open(os.path.join(d, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert any("wm/dyn" in r for r in rows) and any("eval/return" in r for r in rows)

    load("dreamer_v3")
    _fork(_recipe_rank, ["--logdir", d, "--resume", "--steps", "120"])
    resumed = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert resumed["count"]["steps"] >= 120
    assert resumed["count"]["updates"] > ckpt["count"]["updates"]
    assert [r["added"] for r in resumed["ranks"]] == [resumed["replay"]["added"]] * 2
    assert resumed["ranks"][1]["added"] > added[1]

    # One process may not resume a two-rank run; nothing is written.
    before = {n: os.path.getmtime(os.path.join(d, n)) for n in os.listdir(d)}
    module = load("dreamer_v3")
    with pytest.raises(SystemExit) as e:
        run(module.Config, module.build, name="dreamer_v3", argv=["--logdir", d, "--resume"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "written by 2 process(es), this run has 1" in err and "--nproc-per-node 2" in err
    assert len(err.splitlines()) == 1
    assert before == {n: os.path.getmtime(os.path.join(d, n)) for n in os.listdir(d)}
