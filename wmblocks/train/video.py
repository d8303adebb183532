"""Videos: evaluation episodes and the world model's open-loop predictions.

Written with imageio (MP4 through its bundled ffmpeg; GIF through Pillow when ffmpeg
is unavailable).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import Tensor

from wmblocks import keys
from wmblocks.nn.rssm import features
from wmblocks.nn.world_model import WorldModel
from wmblocks.train.envs import video_frame


def write_video(path: str, frames: list[np.ndarray] | np.ndarray, fps: int = 15) -> str:
    """Write ``frames`` (``[T, H, W, 3]`` uint8) to ``path`` (``.mp4`` or ``.gif``);
    an MP4 falls back to a GIF beside it when ffmpeg cannot be used. Written to a
    temporary name first, then renamed, so a crash never leaves a torn video. Returns
    the path written."""
    import imageio.v2 as imageio

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video expects [T, H, W, 3] frames, got {frames.shape}")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    root, ext = os.path.splitext(path)
    if ext == ".mp4":
        tmp = root + ".tmp.mp4"
        try:
            imageio.mimwrite(tmp, list(frames), fps=fps, macro_block_size=1)
            os.replace(tmp, path)
            return path
        except Exception:  # no usable ffmpeg: write a GIF instead
            if os.path.exists(tmp):
                os.remove(tmp)
            path, root, ext = root + ".gif", root, ".gif"
    tmp = root + ".tmp.gif"
    imageio.mimwrite(tmp, list(frames), duration=1000 / fps, loop=0)
    os.replace(tmp, path)
    return path


def read_video(path: str) -> np.ndarray:
    """The frames of a video written by :func:`write_video`, ``[T, H, W, 3]`` uint8."""
    import imageio.v2 as imageio

    return np.stack([np.asarray(f)[..., :3] for f in imageio.mimread(path, memtest=False)])


def _to_pixels(decoder, key: str, x: Tensor) -> Tensor:
    """A decoder's prediction (in its target space) back to pixels in [0, 255]: the
    target map is affine (x / 255 or x / 255 - 0.5), read off at 0 and 255."""
    lo = decoder.target(key, torch.zeros((), dtype=torch.uint8, device=x.device))
    hi = decoder.target(key, torch.full((), 255, dtype=torch.uint8, device=x.device))
    return ((x - lo) / (hi - lo) * 255.0).clamp(0, 255)


@torch.no_grad()
def open_loop(
    wm: WorldModel, batch: TensorDictBase, key: str, context: int = 5, sequences: int = 4
) -> np.ndarray:
    """The open-loop prediction video of the DreamerV3 reference's report: the world
    model observes the first ``context`` steps of ``sequences`` replayed sequences
    (from the initial state), then predicts the rest from the taken actions alone
    (h_{t+1} = f(h_t, z_t, a_t), z_{t+1} ~ p(z | h_{t+1}), image = decoder mean).

    Args:
        batch: a ``[B, T]`` replay batch (observation keys, action, is_first).
        key: the image observation to show.

    Returns ``[T, sequences * H, 3 * W, 3]`` uint8 frames: per sequence a row of truth,
    prediction, and their difference (grey is 0, brighter where the prediction is too
    bright, darker where too dark). The first ``context`` predictions are the
    posterior's reconstructions.
    """
    td = batch[:sequences].clone()
    n, length = td.batch_size
    ctx = td[:, :context]
    wm.observe(ctx)
    deter, stoch = ctx[keys.DETER][:, -1], ctx[keys.STOCH][:, -1]
    feats = [features(ctx[keys.DETER], ctx[keys.STOCH])]
    for t in range(context, length):
        action = td[keys.ACTION][:, t - 1].to(deter.dtype)
        deter, stoch = wm.rssm.img_step(deter, stoch, action)
        feats.append(features(deter, stoch)[:, None])
    feat = torch.cat(feats, 1)  # [n, T, F]
    pred = _to_pixels(wm.decoder, key, wm.decoder(feat)[key].mean)
    truth = td[key].float()
    if td[key].dtype != torch.uint8:
        truth = _to_pixels(wm.decoder, key, wm.decoder.target(key, td[key]))
    diff = ((pred - truth) / 2.0 + 127.5).clamp(0, 255)
    grid = torch.stack([truth, pred, diff], 2).round().to(torch.uint8).cpu().numpy()
    # grid: [n, T, 3 panels, C, H, W] -> frames [T, n * H, 3 * W, 3]
    frames = []
    for t in range(length):
        rows = [np.concatenate([video_frame(p) for p in grid[i, t]], 1) for i in range(n)]
        frames.append(np.concatenate(rows, 0))
    return np.stack(frames)
