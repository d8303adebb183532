"""Collection with several environments, pixel replay, and the videos."""

import numpy as np
import pytest
import torch

from tests.helpers import VERSIONS, random_batch, tiny_world_model
from wmblocks import keys
from wmblocks.train.envs import Envs, video_frame
from wmblocks.train.replay import SequenceReplay
from wmblocks.train.video import open_loop, read_video, write_video


def _rows(t: int, envs: int) -> dict:
    """Step t of ``envs`` environments: env e's image is filled with 10 e + t (mod 256)
    and its vector holds (e, t)."""
    e = torch.arange(envs)
    image = ((10 * e + t) % 256).to(torch.uint8).view(envs, 1, 1, 1).expand(envs, 3, 64, 64)
    return {
        "image": image.clone(),
        "observation": torch.stack([e.float(), torch.full((envs,), float(t))], -1),
        keys.ACTION: torch.zeros(envs, 2),
        keys.REWARD: torch.zeros(envs),
        keys.IS_FIRST: torch.full((envs,), t == 0),
        keys.IS_TERMINAL: torch.zeros(envs, dtype=torch.bool),
        keys.IS_LAST: torch.zeros(envs, dtype=torch.bool),
    }


def test_pixels_stay_uint8_and_windows_stay_in_one_environment(tmp_path):
    replay = SequenceReplay(capacity=3 * 40, directory=str(tmp_path), batch=16, length=8, envs=3)
    for t in range(55):  # 40 per environment: wraps once
        replay.add(_rows(t, 3))
    assert replay.can_sample() and len(replay) == 120
    for _ in range(5):
        batch = replay.sample()
        assert batch.batch_size == (16, 8) and batch["image"].dtype == torch.uint8
        env, step = batch["observation"][..., 0], batch["observation"][..., 1]
        assert (env == env[:, :1]).all(), "a window mixes environments"
        assert torch.equal(step.diff(dim=1), torch.ones(16, 7)), "a window is not contiguous"
        expected = ((10 * env + step) % 256).to(torch.uint8)
        assert torch.equal(batch["image"][:, :, 0, 0, 0], expected), "pixels changed"
    replay.flush()
    other = SequenceReplay.reopen(3 * 40, str(tmp_path), 16, 8, envs=3, added=replay.added)
    assert other.sample()["image"].dtype == torch.uint8 and other.added == 55


def test_parallel_collection_gives_the_serial_transitions():
    serial = Envs("Pendulum-v1", seed=5, n=2, parallel=False, episode_steps=15)
    parallel = Envs("Pendulum-v1", seed=5, n=2, parallel=True, episode_steps=15)
    try:
        a, b = serial.reset(), parallel.reset()
        g = torch.Generator().manual_seed(0)
        for _ in range(40):  # through two episode ends and the resets after them
            for key in a:
                assert torch.equal(a[key], b[key]), key
            action = torch.rand(2, 1, generator=g) * 2 - 1
            a, b = serial.step(action), parallel.step(action)
            assert serial.frames == parallel.frames
        assert not torch.equal(a[keys.OBS][0], a[keys.OBS][1]), "both environments share a seed"
    finally:
        serial.close()
        parallel.close()


def test_episode_ends_and_starts_per_environment():
    env = Envs("CartPole-v1", seed=0, n=2, parallel=False)
    row, ends = env.reset(), 0
    for _ in range(100):
        last = row[keys.IS_LAST].clone()
        row = env.step(env.random_action())
        assert torch.equal(row[keys.IS_FIRST], last), "is_first must follow is_last"
        assert env.frames == int((~last).sum())
        ends += int(row[keys.IS_LAST].sum())
    assert ends > 2


@pytest.mark.parametrize("ext", [".mp4", ".gif"])
def test_videos_have_every_frame(tmp_path, ext):
    frames = np.random.default_rng(0).integers(0, 256, (7, 64, 96, 3), dtype=np.uint8)
    path = write_video(str(tmp_path / f"v{ext}"), frames)
    assert path.endswith(ext) and read_video(path).shape == (7, 64, 96, 3)
    with pytest.raises(ValueError, match="frames"):
        write_video(str(tmp_path / "bad.mp4"), frames[..., 0])


def test_video_frames_of_any_channel_count():
    grid = np.zeros((4, 64, 64), np.uint8)
    grid[2, :10] = 255
    frame = video_frame(grid)
    assert frame.shape == (64, 64, 3) and frame[:10].max() > 0 and frame[10:].max() == 0
    assert video_frame(np.full((1, 8, 8), 9, np.uint8)).tolist() == np.full((8, 8, 3), 9).tolist()


@pytest.mark.parametrize("version", VERSIONS)
def test_open_loop_shows_truth_prediction_and_difference(version):
    shapes = {"image": (3, 64, 64), "observation": (2,)}
    wm = tiny_world_model(version, shapes, 2)
    batch = random_batch(shapes, 2, B=3, T=9)
    frames = open_loop(wm, batch, "image", context=5, sequences=2)
    assert frames.shape == (9, 2 * 64, 3 * 64, 3) and frames.dtype == np.uint8
    truth = batch["image"][:2].permute(0, 1, 3, 4, 2).numpy()  # [n, T, H, W, C]
    assert np.array_equal(frames[:, :64, :64], truth[0])
    assert np.array_equal(frames[:, 64:, :64], truth[1])


def test_a_wrapped_replay_samples_windows_uniformly(tmp_path):
    replay = SequenceReplay(capacity=100, directory=str(tmp_path), batch=64, length=5)
    for t in range(110):  # wrapped: the newest 10 steps sit at the start of the column
        replay.add(_rows(t, 1))
    starts = torch.cat([replay.sample()["observation"][:, 0, 1] for _ in range(40)])
    newest = (starts >= 100).float().mean().item()
    assert newest < 0.15, f"{newest:.0%} of windows start in the newest 10 of 96 possible starts"
