"""The replay's own generator and the prefetching thread: batches equal synchronous
sampling, write-backs included."""

import pytest
import torch

from wmblocks import keys
from wmblocks.train.prefetch import Prefetcher
from wmblocks.train.replay import SequenceReplay


def _filled(path, seed=0, steps=60, envs=2) -> SequenceReplay:
    replay = SequenceReplay(
        capacity=envs * 40, directory=str(path), batch=4, length=5, envs=envs, seed=seed
    )
    for i in range(steps):  # wraps: 60 steps into 40 per environment
        replay.add(
            {
                keys.OBS: torch.full((envs, 3), float(i)) + torch.arange(envs)[:, None] / 10,
                keys.ACTION: torch.zeros(envs, 1),
                keys.REWARD: torch.zeros(envs),
                keys.IS_FIRST: torch.tensor([i % 9 == 0] * envs),
                keys.IS_TERMINAL: torch.zeros(envs, dtype=torch.bool),
                keys.DETER: torch.zeros(envs, 2),
            }
        )
    return replay


def test_sampling_uses_the_replays_generator_not_torchs_global_one(tmp_path):
    a, b = _filled(tmp_path / "a", seed=3), _filled(tmp_path / "b", seed=3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = [a.sample()[keys.OBS] for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    torch.manual_seed(123)  # and does not matter
    assert all(torch.equal(x, b.sample()[keys.OBS]) for x in first)
    other = _filled(tmp_path / "c", seed=4)
    assert not all(torch.equal(x, other.sample()[keys.OBS]) for x in first)
    # The state continues a stream exactly (what a checkpoint keeps).
    state = a.generator.get_state()
    nxt = a.sample()[keys.OBS]
    b.generator.set_state(state)
    assert torch.equal(nxt, b.sample()[keys.OBS])


def test_prefetched_batches_equal_synchronous_ones_with_write_backs(tmp_path):
    """The loop's pattern: request the next batch, run the update (which writes refreshed
    latents back into replay), take. The taken batch equals what a synchronous sample
    after the write would be, latents included."""
    # 12 steps: every batch of 4 windows of 5 overlaps the one before it.
    sync, ahead = (
        _filled(tmp_path / "s", steps=12, envs=1),
        _filled(tmp_path / "p", steps=12, envs=1),
    )
    prefetch = Prefetcher(ahead, torch.device("cpu"), refresh=(keys.DETER,))
    try:
        prefetch.request()
        for update in range(6):
            want, want_index = sync.sample_indexed()
            got, got_index = prefetch.take()
            assert not prefetch.pending
            for a, b in zip(want_index, got_index, strict=True):
                assert torch.equal(a, b)
            assert (got == want).all()
            if update % 2 == 0:
                prefetch.request().result()  # gathered before the write below
            fresh = torch.full((4, 5, 2), float(update + 1))
            sync.write(want_index, want.select(keys.DETER).update({keys.DETER: fresh}))
            ahead.write(got_index, got.select(keys.DETER).update({keys.DETER: fresh.clone()}))
        # The write-backs landed: some later batch saw refreshed latents.
        assert prefetch.take()[0][keys.DETER].abs().sum() > 0
    finally:
        prefetch.close()


def test_a_sampling_error_surfaces_at_take_with_its_cause(tmp_path):
    replay = SequenceReplay(capacity=40, directory=str(tmp_path), batch=2, length=5)
    prefetch = Prefetcher(replay, torch.device("cpu"))
    try:
        prefetch.request()  # nothing stored yet: torchrl's sampler fails in the thread
        with pytest.raises(Exception) as info:
            prefetch.take()
        assert not isinstance(info.value, AssertionError)
        # Raised with the worker's traceback: the sampling call inside the thread.
        assert any(entry.name == "_sample" for entry in info.traceback), info.traceback
        assert not prefetch.pending
    finally:
        prefetch.close()
