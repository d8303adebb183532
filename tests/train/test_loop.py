"""The shared loop in-process: train-ratio scheduling, the batches it hands to the
update, evaluation and checkpoints (the recipes' subprocess tests cover the CLI)."""

import dataclasses
import os

import pytest
import torch

from tests.recipes.common import TINY, load
from wmblocks import keys
from wmblocks.train.config import parse_config
from wmblocks.train.logging import read_metrics
from wmblocks.train.loop import Trainer


def counting_build(recipe):
    """The recipe's own build, with an update that only records what it was given."""
    module = load(recipe)
    seen = []

    def build(cfg, env, device):
        agent = module.build(cfg, env, device)

        def update(batch):
            seen.append(batch)
            return {"wm/loss": torch.tensor(0.0)}

        return dataclasses.replace(agent, update=update)

    return module.Config, build, seen


@pytest.mark.parametrize(("ratio", "prefill"), [(32.0, 100), (24.0, 57), (128.0, 0)])
def test_updates_follow_the_train_ratio_after_prefill(tmp_path, ratio, prefill):
    config_cls, build, seen = counting_build("dreamer_v1")
    args = [*TINY["dreamer_v1"], "--batch", "4", "--length", "16", "--steps", "260"]
    args += ["--action-repeat", "1"]
    args += ["--train-ratio", str(ratio), "--prefill", str(prefill), "--eval-every", "0"]
    args += ["--eval-episodes", "1", "--logdir", str(tmp_path / "run")]
    trainer = Trainer(config_cls, parse_config(config_cls, args), build)
    trainer.train()
    trainer.close()
    per_step = ratio / (4 * 16)
    # Agent steps add the credit (once prefill frames are in and the replay can fill a
    # window): frames prefill..260 one each, and the step that resets Pendulum after its
    # episode end at 200 (it takes no frame, as in the reference's driver).
    first = max(prefill, 17)
    assert len(seen) == int((260 - first + 2) * per_step + 1e-9)
    assert trainer.count["updates"] == len(seen)
    batch = seen[-1]
    assert batch.batch_size == torch.Size([4, 16])
    assert batch[keys.ACTION].shape == (4, 16, 1) and batch[keys.OBS].shape == (4, 16, 3)
    assert {keys.REWARD, keys.IS_FIRST, keys.IS_TERMINAL} <= set(batch.keys())
    ckpt = torch.load(os.path.join(tmp_path / "run", "checkpoint.pt"), weights_only=False)
    assert ckpt["count"]["steps"] == 260 and ckpt["count"]["updates"] == len(seen)
    assert ckpt["replay"]["added"] == 260 + 1  # Pendulum: one episode end (200) stored twice


def test_windows_carry_episode_starts(tmp_path):
    config_cls, build, seen = counting_build("dreamer_v2")
    args = [*TINY["dreamer_v2"], "--batch", "8", "--length", "16", "--steps", "300"]
    args += ["--train-ratio", "128", "--prefill", "100", "--eval-every", "0"]
    args += ["--eval-episodes", "1", "--logdir", str(tmp_path / "run")]
    trainer = Trainer(config_cls, parse_config(config_cls, args), build)
    trainer.train()
    trainer.close()
    # CartPole episodes of a random-ish policy are short: windows cross episode
    # boundaries, each marked by is_first, and the step before it is terminal or last.
    batches = torch.stack([b[keys.IS_FIRST] for b in seen[-20:]])
    terminal = torch.stack([b[keys.IS_TERMINAL] for b in seen[-20:]])
    assert batches[..., 1:].any()
    starts = batches[..., 1:]
    assert terminal[..., :-1][starts].all()  # every CartPole episode here ends in a fall


def test_action_repeat_counts_frames_and_keeps_the_ratio_per_agent_step(tmp_path):
    config_cls, build, seen = counting_build("dreamer_v1")
    args = [*TINY["dreamer_v1"], "--batch", "4", "--length", "16", "--steps", "400"]
    args += ["--action-repeat", "2", "--train-ratio", "64", "--prefill", "100"]
    args += ["--eval-every", "150", "--save-every", "150", "--log-every", "50"]
    args += ["--eval-episodes", "1", "--logdir", str(tmp_path / "run")]
    trainer = Trainer(config_cls, parse_config(config_cls, args), build)
    trainer.train()
    trainer.close()
    assert trainer.count["steps"] == 400  # frames; 200 agent steps, two episodes
    assert trainer.count["episodes"] == 2
    # One update per agent step: the steps ending at frames 100, 102, ..., 400 (151 of
    # them) and the step that starts the second episode (it takes no frame).
    assert len(seen) == 151 + 1
    evals = [r["step"] for r in read_metrics(str(tmp_path / "run" / "metrics.jsonl"))]
    assert {150, 300, 400} <= set(evals)  # multiples crossed in steps of two frames
