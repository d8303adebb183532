"""How well a world model predicts, as numbers by imagination horizon.

:func:`open_loop_errors` is the numeric twin of the open-loop video
(:func:`wmblocks.train.video.open_loop`): the model filters the first ``context``
steps of a window, then predicts the rest from the actions alone, and each prediction
is scored against what happened. Errors are in the observation's own units (vectors as
recorded, images in [0, 1]), so that world models of different versions, whose
decoders predict in different spaces (symlog, raw, centred pixels), compare on one
scale.
"""

from __future__ import annotations

import json
import os

import torch
from tensordict import TensorDictBase
from torch import Tensor

from wmblocks import keys
from wmblocks.nn.rssm import features
from wmblocks.nn.world_model import WorldModel
from wmblocks.train.video import _to_pixels


def _observation_units(wm: WorldModel, key: str, x: Tensor, predicted: bool) -> Tensor:
    """Vectors ``[B, H, K]`` as they are (the V3 decoder's symlog distribution returns
    its mean in the observation space already); images ``[B, H, C, 64, 64]`` in [0, 1],
    from uint8 data or from a decoder's mean in its target space."""
    if x.dim() < 5:
        return x.float()
    if not predicted and x.dtype == torch.uint8:
        return x.float() / 255.0
    if not predicted:
        x = wm.decoder.target(key, x)
    return _to_pixels(wm.decoder, key, x.float()) / 255.0


@torch.no_grad()
def open_loop_errors(
    wm: WorldModel, batch: TensorDictBase, context: int = 5
) -> dict[str, tuple[Tensor, Tensor]]:
    """Errors of open-loop predictions ``k = 1 .. H`` steps past the context, with
    ``H = T - context``.

    The model observes the whole ``[B, T]`` window (its posteriors q(z_t | h_t, o_t)
    are the reference latents) and, from its state at step ``context - 1``, imagines
    ``h_t = f(h_{t-1}, z_{t-1}, a_{t-1})``, ``p(z_t | h_t)``, ``z_t ~ p`` for
    ``t = context .. T - 1`` with the recorded actions. At ``t = context - 1 + k``:

    - ``obs/<key>``: mean squared error of the decoder's mean of o_t (per element, in
      the units of the module docstring);
    - ``reward``: squared error of the reward head's mean of r_t;
    - ``cont``: whether the continue head (probability > 0.5) gets wrong whether o_t
      is terminal (0/1; absent without a continue head);
    - ``kl``: KL(q(z_t | o_<=t) || p_open-loop(z_t)), summed over the latent, nats.

    A prediction past an episode start (``is_first`` at a step in ``context .. t``)
    is not counted: the recorded next episode does not follow from the actions.

    Returns ``{name: (sum [H], count [H])}`` over the batch (sums to add up over
    batches; :func:`mean_errors` divides). ``batch``: observation keys, ``action``,
    ``reward``, ``is_first``, ``is_terminal``, on the model's device.
    """
    td = batch.clone()
    length = td.batch_size[1]
    if not 0 < context < length:
        raise ValueError(f"context must be in [1, T - 1] = [1, {length - 1}], got {context}")
    wm.observe(td)
    rssm = wm.rssm
    deter, stoch = td[keys.DETER][:, context - 1], td[keys.STOCH][:, context - 1]
    feats, priors = [], []
    for t in range(context, length):
        action = td[keys.ACTION][:, t - 1].to(deter.dtype)
        deter = rssm.core(deter, stoch, action)
        prior = rssm.prior(deter)
        stoch = rssm.prior_head.sample(prior)
        feats.append(features(deter, stoch))
        priors.append(prior)
    feat, prior = torch.stack(feats, 1), torch.stack(priors, 1)  # [B, H, .]
    future = td[:, context:]
    # valid[b, k]: no episode starts between the context and step context + k.
    valid = (torch.cumsum(future[keys.IS_FIRST].long(), 1) == 0).float()
    errors: dict[str, Tensor] = {}
    for key, dist in wm.decoder(feat).items():
        pred = _observation_units(wm, key, dist.mean, predicted=True)
        truth = _observation_units(wm, key, future[key], predicted=False)
        errors[f"obs/{key}"] = (pred - truth).pow(2).flatten(2).mean(-1)
    errors["reward"] = (wm.reward_head(feat).mean.reshape(valid.shape) - future[keys.REWARD]).pow(2)
    if wm.cont_head is not None:
        says_continue = wm.cont_head(feat).mean.reshape(valid.shape) > 0.5
        errors["cont"] = (says_continue == future[keys.IS_TERMINAL]).float()
    kl = rssm.post_head.kl(future[keys.POST], prior)
    errors["kl"] = kl.reshape(*valid.shape, -1).sum(-1)
    return {name: ((e.float() * valid).sum(0), valid.sum(0)) for name, e in errors.items()}


def mean_errors(totals: list[dict[str, tuple[Tensor, Tensor]]]) -> dict[str, list[float]]:
    """Add up :func:`open_loop_errors` of several batches and divide: ``{name: [H]
    means}`` (NaN at a horizon no window reached)."""
    out = {}
    for name in totals[0]:
        total = sum(t[name][0] for t in totals)
        count = sum(t[name][1] for t in totals)
        out[name] = (total / count).tolist()
    return out


def write_open_loop(path: str, step: int, errors: dict[str, list[float]]) -> None:
    """Append ``{"step", "errors": {name: [H]}}`` as one line of ``path`` (JSONL)."""
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, "errors": errors}) + "\n")


def read_open_loop(path: str, last: int | None = None) -> dict[str, dict[str, list[float]]]:
    """The evaluations :func:`write_open_loop` appended to ``path`` (the ``last`` ones),
    as ``{"<step> updates": {name: [H]}}`` for :func:`plot_open_loop`."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = rows[-last:] if last else rows
    return {f"{r['step']} updates": r["errors"] for r in rows}


def plot_open_loop(curves: dict[str, dict[str, list[float]]], path: str, title: str = "") -> None:
    """One panel per error name (log scale), horizon on x, one line per label of
    ``curves`` (``{label: {name: [H]}}``: e.g. two world models on the same data, or
    one model at several training steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(curves.values())))
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), dpi=100)
    for ax, name in zip(list(axes) if len(names) > 1 else [axes], names, strict=True):
        for label, errors in curves.items():
            if name in errors:
                values = errors[name]
                ax.plot(range(1, len(values) + 1), values, "-", label=label)
        ax.set_title(name)
        ax.set_xlabel("open-loop horizon (steps)")
        if name != "cont":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes_list = list(axes) if len(names) > 1 else [axes]
    axes_list[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
