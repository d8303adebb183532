"""Checkpoints that do not copy the replay (issue 16): the replay's files reopened at a
checkpoint's write position, rotation with --keep, format versions, failed writes."""

import errno
import os

import pytest
import torch

import wmblocks
from wmblocks import keys
from wmblocks.errors import UserError
from wmblocks.train import checkpoint as ck
from wmblocks.train.replay import SequenceReplay


def _row(t: int, envs: int = 2) -> dict:
    e = torch.arange(envs, dtype=torch.float32)
    return {
        keys.OBS: torch.stack([e, torch.full((envs,), float(t))], -1),
        keys.ACTION: torch.zeros(envs, 1),
        keys.REWARD: torch.full((envs,), float(t)),
        keys.IS_FIRST: torch.full((envs,), t == 0),
        keys.IS_TERMINAL: torch.zeros(envs, dtype=torch.bool),
        keys.IS_LAST: torch.zeros(envs, dtype=torch.bool),
    }


@pytest.mark.parametrize("steps", [30, 47])  # 47: wrapped (20 per environment)
def test_a_reopened_replay_samples_exactly_like_the_one_that_wrote_it(tmp_path, steps):
    d = str(tmp_path / "replay")
    replay = SequenceReplay(capacity=40, directory=d, batch=6, length=5, envs=2)
    for t in range(steps):
        replay.add(_row(t))
    replay.flush()
    other = SequenceReplay.reopen(40, d, 6, 5, envs=2, added=steps)
    assert other.added == steps and len(other) == len(replay)
    for seed in range(5):
        torch.manual_seed(seed)
        a = replay.sample()
        torch.manual_seed(seed)
        b = other.sample()
        assert (a == b).all(), f"seed {seed}: the reopened buffer samples other windows"
    # Both go on writing at the same cursor.
    replay.add(_row(steps))
    other.add(_row(steps))
    store_a, store_b = replay.buffer.storage._storage, other.buffer.storage._storage
    assert torch.equal(store_a[keys.OBS], store_b[keys.OBS])


def test_rows_written_after_the_checkpoint_are_not_counted(tmp_path):
    d = str(tmp_path / "replay")
    replay = SequenceReplay(capacity=100, directory=d, batch=8, length=4, envs=2)
    for t in range(30):
        replay.add(_row(t))
    checkpointed = replay.added
    for t in range(30, 45):  # written after the checkpoint, then the process dies
        replay.add(_row(t))
    other = SequenceReplay.reopen(100, d, 8, 4, envs=2, added=checkpointed)
    assert len(other) == 30 * 2
    steps = torch.cat([other.sample()[keys.OBS][..., 1].flatten() for _ in range(30)])
    assert steps.max() < 30, "a window reaches rows written after the checkpoint"
    other.add(_row(1000))  # the resumed run overwrites them, from the cursor on
    assert other.buffer.storage._storage[keys.OBS][30, 0, 1] == 1000


def test_reopening_a_damaged_or_foreign_replay_says_what_is_wrong(tmp_path):
    d = str(tmp_path / "replay")
    replay = SequenceReplay(capacity=40, directory=d, batch=2, length=4, envs=2)
    for t in range(10):
        replay.add(_row(t))
    with pytest.raises(UserError, match="laid out as"):
        SequenceReplay.reopen(80, d, 2, 4, envs=2, added=10)
    os.remove(os.path.join(d, "meta.json"))
    with pytest.raises(UserError, match="missing or corrupt"):
        SequenceReplay.reopen(40, d, 2, 4, envs=2, added=10)
    with pytest.raises(UserError, match="missing or corrupt"):
        SequenceReplay.reopen(40, str(tmp_path / "nothing"), 2, 4, envs=2, added=10)


def _state(steps: int) -> dict:
    return {"count": {"steps": steps}, "w": torch.full((3,), float(steps))}


def test_keep_rotates_the_newest_checkpoints(tmp_path):
    d = str(tmp_path)
    for steps in (100, 200, 300, 400, 500):
        ck.rotate_checkpoints(d, _state(steps), keep=3)
    names = sorted(os.listdir(d))
    assert names == ["checkpoint.pt", "checkpoint_300.pt", "checkpoint_400.pt"], names
    assert ck.load_checkpoint(os.path.join(d, "checkpoint.pt"))["count"]["steps"] == 500
    assert ck.load_checkpoint(os.path.join(d, "checkpoint_300.pt"))["w"][0] == 300
    ck.rotate_checkpoints(d, _state(600), keep=1)
    assert sorted(os.listdir(d)) == ["checkpoint.pt"]


def test_a_checkpoint_carries_its_format_and_version_and_others_are_refused(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    ck.save_checkpoint(path, _state(1))
    saved = torch.load(path, weights_only=False)
    assert saved["format"] == ck.FORMAT and saved["wmblocks"] == wmblocks.__version__
    torch.save({"count": {"steps": 1}, "replay_dir": "replay_1"}, path)  # wmblocks 0.1
    with pytest.raises(UserError, match=r"format 1 \(written by wmblocks 0.1\)"):
        ck.load_checkpoint(path)
    torch.save({"count": {}, "format": ck.FORMAT + 1, "wmblocks": "9.0"}, path)
    with pytest.raises(UserError, match="wmblocks 9.0"):
        ck.load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(UserError, match="not a wmblocks checkpoint"):
        ck.load_checkpoint(path)
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="corrupt"):
        ck.load_checkpoint(path)


def test_a_full_disk_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    d = str(tmp_path)
    ck.rotate_checkpoints(d, _state(100))
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match="the disk is full; the previous checkpoint"):
        ck.rotate_checkpoints(d, _state(200))
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(d)) == ["checkpoint.pt"]  # no temporary file left
    assert ck.load_checkpoint(os.path.join(d, "checkpoint.pt"))["count"]["steps"] == 100
