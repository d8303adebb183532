"""--deterministic on CPU (issue 16): the same seed twice gives bit-identical metrics,
and a run resumed from its step-k checkpoint continues exactly as the run that wrote
it (both restart their episodes at k: what must match is everything the library
controls: sampler, RNG streams, optimiser state, normaliser, slow critic, train-ratio
credit)."""

import dataclasses
import os
import shutil

import pytest
import torch

from tests.recipes.common import TINY, load
from wmblocks.train.config import parse_config
from wmblocks.train.logging import read_metrics
from wmblocks.train.loop import Trainer

ARGS = ["--batch", "4", "--length", "16", "--train-ratio", "64", "--prefill", "100"]
ARGS += ["--env", "Pendulum-v1", "--eval-every", "0", "--eval-episodes", "1"]
ARGS += ["--log-every", "50", "--deterministic"]


def _trainer(recipe: str, logdir: str, *extra: str) -> Trainer:
    cls = load(recipe).Config
    cfg = parse_config(cls, [*TINY[recipe], *ARGS, "--logdir", logdir, *extra])
    return Trainer(cls, cfg, load(recipe).build)


def _train(trainer: Trainer, steps: int | None = None) -> None:
    if steps is not None:
        trainer.cfg = dataclasses.replace(trainer.cfg, steps=steps)
    trainer.train()


def _tensors(prefix: str, value, out: dict) -> None:
    if torch.is_tensor(value):
        out[prefix] = value.clone()
    elif isinstance(value, dict):
        for k, v in value.items():
            _tensors(f"{prefix}.{k}", v, out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _tensors(f"{prefix}.{i}", v, out)


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every tensor of the modules' and optimisers' state (parameters, buffers such as
    the return normaliser and the slow critic, moments, step counts)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in trainer.agent.modules.items():
        _tensors(name, module.state_dict(), out)
    for name, opt in trainer.agent.optimizers.items():
        _tensors(f"{name}.opt", opt.state_dict(), out)
    return out


def _metrics(run_dir: str, after: int = -1) -> list[dict]:
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    rows = [r for r in rows if r["step"] > after]
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("recipe", ["dreamer_v3", "dreamer_v2", "dreamer_v1"])
def test_the_same_seed_twice_gives_identical_metrics(tmp_path, recipe):
    runs = []
    for name in ("a", "b"):
        trainer = _trainer(recipe, str(tmp_path / name), "--steps", "220")
        _train(trainer)
        trainer.close()
        runs.append((_metrics(str(tmp_path / name)), _params(trainer)))
    (metrics_a, params_a), (metrics_b, params_b) = runs
    assert any("wm/reward" in r for r in metrics_a)
    assert metrics_a == metrics_b
    assert all(torch.equal(params_a[k], params_b[k]) for k in params_a)


@pytest.mark.parametrize("recipe", ["dreamer_v3", "dreamer_v1"])
def test_a_resumed_run_continues_exactly_as_the_uninterrupted_one(tmp_path, recipe):
    first, copy = str(tmp_path / "run"), str(tmp_path / "copy")
    trainer = _trainer(recipe, first, "--steps", "160", "--save-every", "160")
    _train(trainer)
    assert trainer.count["updates"] > 0
    shutil.copytree(first, copy)  # the run as it stood at its step-160 checkpoint
    _train(trainer, steps=260)  # goes on in the same process (episodes restart at 160)
    trainer.close()
    resumed = _trainer(recipe, copy, "--resume", "--steps", "260")
    _train(resumed)
    resumed.close()
    assert resumed.count == {**trainer.count, "seconds": resumed.count["seconds"]}
    a, b = _params(trainer), _params(resumed)
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"differ after resuming: {changed[:5]}"
    after = _metrics(first, after=160)
    assert after and after == _metrics(copy, after=160)
