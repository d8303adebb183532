"""Copy the official DreamerV3 (2024) parameters of ``dreamerv3_2024.npz`` into wmblocks
modules, and build those modules at the golden file's sizes.

Layout rules (``shared/golden/README.md``, "Layout conventions"):

* Linear: the official ``kernel`` is ``[in, out]`` with ``y = x @ kernel + bias``; a torch
  ``nn.Linear.weight`` is ``kernel.T``.
* RMS norm: the official ``scale`` is ``nn.RMSNorm.weight`` (eps 1e-4, no shift).
* BlockLinear: the official ``kernel`` ``[G, in/G, out/G]`` is our ``BlockLinear.weight``
  as is; the flat official ``bias`` ``[out]`` (group-major) is our ``bias`` ``[G, out/G]``.
* The block GRU's first hidden layer: the official ``dynhid0`` kernel is
  ``[G, D/G + 3H, D/G]`` over each group's input ``[deter_k, x0, x1, x2]``. Rows
  ``0 .. D/G - 1`` of group k (its own deter slice) are our ``first_block.weight[k]``;
  rows ``D/G ..`` of group k (the shared ``[x0, x1, x2]``) fill columns
  ``k*D/G .. (k+1)*D/G - 1`` of our dense ``shared`` ``[3H, D]``. The bias goes to
  ``first_block.bias`` (``shared`` has none).
* Posterior: the official ``obs0`` kernel ``[D + E, H]`` reads ``concat([deter, tokens])``:
  rows ``0 .. D - 1`` are our ``post_deter`` (no bias), rows ``D ..`` our ``post_embed``,
  which carries the bias.
* Feature order: the official reward, continue, policy and value heads read
  ``concat([deter, stoch])``, while wmblocks' features are ``concat([stoch, deter])``
  (:func:`wmblocks.nn.rssm.features`). :func:`load_mlp` therefore permutes the kernel
  rows of a head's *first* layer, ``[deter rows; stoch rows]`` ->
  ``[stoch rows; deter rows]``, when given ``feat_split=(deter, stoch)``, so the head
  computes the same function of the same state.

Every loader checks that each parameter of the target module was written exactly once
and that every official parameter under the prefix was used, so a missed or misplaced
tensor fails loudly instead of keeping its random initialisation. Modules are float32;
weights are copied under ``torch.no_grad``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wmblocks.nn.actors import BoundedNormalActor, DiscreteActor
from wmblocks.nn.cores import BlockGRUCore
from wmblocks.nn.heads import BernoulliHead, TwoHotHead
from wmblocks.nn.latents import CategoricalLatentHead
from wmblocks.nn.layers import MLP
from wmblocks.nn.rssm import RSSM

# Sizes of the golden RSSM (README "Hyperparameters"): deter D, hidden H, blocks G,
# stoch groups S, classes C, action A, tokens E.
D, H, G, S, C, A, E = 64, 32, 8, 8, 4, 2, 16
RSSM_PREFIX = "rssm/params/dyn"
UNIMIX = 0.01
# Sizes of the golden heads (README "heads/"): x [4, 24], 2 layers of 16 units.
HEAD_IN, HEAD_UNITS, HEAD_LAYERS = 24, 16, 2


def _params(golden: dict, prefix: str) -> dict[str, np.ndarray]:
    """The official parameters under ``prefix/``, keyed by the rest of their path."""
    start = prefix.rstrip("/") + "/"
    found = {k[len(start) :]: v for k, v in golden.items() if k.startswith(start)}
    if not found:
        raise KeyError(f"no golden parameters under {prefix!r}")
    return found


class _Writer:
    """Copies arrays into one module's parameters and tracks coverage."""

    def __init__(self, module: nn.Module, params: dict[str, np.ndarray]):
        self.module, self.params = module, params
        self.used: set[str] = set()
        self.written: set[str] = set()
        self.names = {id(p): n for n, p in module.named_parameters()}

    def get(self, key: str) -> np.ndarray:
        self.used.add(key)
        return np.asarray(self.params[key], dtype=np.float32)

    def set(self, param: torch.Tensor, array: np.ndarray) -> None:
        name = self.names[id(param)]
        if name in self.written:
            raise AssertionError(f"parameter {name} written twice")
        value = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tuple(param.shape) != tuple(value.shape):  # copy_ would broadcast silently
            raise AssertionError(f"{name}: shape {tuple(param.shape)} != {tuple(value.shape)}")
        with torch.no_grad():
            param.copy_(value)
        self.written.add(name)

    def linear(self, layer: nn.Linear, key: str, kernel: np.ndarray | None = None) -> None:
        kernel = self.get(f"{key}/kernel") if kernel is None else kernel
        self.set(layer.weight, kernel.T)
        if layer.bias is not None:
            self.set(layer.bias, self.get(f"{key}/bias"))

    def norm(self, norm: nn.Module, key: str) -> None:
        if not isinstance(norm, nn.RMSNorm) or norm.eps != 1e-4:
            raise AssertionError(f"{key}: expected RMSNorm(eps=1e-4), got {norm}")
        self.set(norm.weight, self.get(f"{key}/scale"))

    def finish(self) -> None:
        missing = sorted(set(self.names.values()) - self.written)
        unused = sorted(set(self.params) - self.used)
        if missing or unused:
            raise AssertionError(f"not loaded: {missing}; official keys unused: {unused}")


def load_block_gru_core(core: BlockGRUCore, golden: dict, prefix: str = RSSM_PREFIX) -> None:
    """Copy ``dynin{0,1,2}``, ``dynhid0`` and ``dyngru`` (plus norms) into ``core``."""
    params = {k: v for k, v in _params(golden, prefix).items() if k.startswith("dyn")}
    w = _Writer(core, params)
    _core_into(w, core)
    w.finish()


def _core_into(w: _Writer, core: BlockGRUCore) -> None:
    for i, layer in enumerate((core.deter_in, core.stoch_in, core.action_in)):
        w.linear(layer, f"dynin{i}")
        w.norm(core.norms[i], f"dynin{i}norm")
    if len(core.more_layers):
        raise AssertionError("the golden core has one hidden layer (dynhid0)")
    kernel = w.get("dynhid0/kernel")  # [G, D/G + 3H, D/G]
    groups, rows, gout = kernel.shape
    gin = core.deter // core.blocks
    if (groups, rows, gout) != (core.blocks, gin + 3 * core.hidden, gin):
        raise AssertionError(f"dynhid0 kernel {kernel.shape} does not fit the core")
    w.set(core.first_block.weight, kernel[:, :gin, :])
    # Group k's shared rows [3H, D/G] fill columns k*D/G .. (k+1)*D/G - 1 of shared [3H, D].
    shared = kernel[:, gin:, :].transpose(1, 0, 2).reshape(3 * core.hidden, core.deter)
    w.set(core.shared, shared)
    w.set(core.first_block.bias, w.get("dynhid0/bias").reshape(groups, gout))
    w.norm(core.hidden_norms[0], "dynhid0norm")
    w.set(core.gates.weight, w.get("dyngru/kernel"))  # [G, D/G, 3 D/G]
    w.set(core.gates.bias, w.get("dyngru/bias").reshape(groups, -1))


def _mlp_layers(mlp: MLP) -> tuple[list[nn.Linear], list[nn.Module], nn.Linear | None]:
    """The hidden Linear layers, their norms and the output Linear (or None) of ``mlp``."""
    mods = list(mlp.net)
    linears = [m for m in mods if isinstance(m, nn.Linear)]
    norms = [m for m in mods if isinstance(m, (nn.RMSNorm, nn.LayerNorm, nn.Identity))]
    out = linears.pop() if len(linears) > len(norms) else None
    return linears, norms, out


def load_rssm(rssm: RSSM, golden: dict, prefix: str = RSSM_PREFIX) -> None:
    """Copy a whole official RSSM (core, prior, posterior) into ``rssm``."""
    w = _Writer(rssm, _params(golden, prefix))
    _core_into(w, rssm.core)
    linears, norms, out = _mlp_layers(rssm.prior_mlp)
    if out is not None or len(linears) != 2:
        raise AssertionError("the golden prior has two hidden layers and no MLP output")
    for i, (linear, norm) in enumerate(zip(linears, norms, strict=True)):
        w.linear(linear, f"prior{i}")
        w.norm(norm, f"prior{i}norm")
    w.linear(rssm.prior_head.linear, "priorlogit")
    obs0 = w.get("obs0/kernel")  # [D + E, H] over concat([deter, tokens])
    w.linear(rssm.post_deter, "obs0", kernel=obs0[: rssm.deter])  # no bias: not read
    w.linear(rssm.post_embed, "obs0", kernel=obs0[rssm.deter :])
    w.norm(rssm.post_norm, "obs0norm")
    w.linear(rssm.post_head.linear, "obslogit")
    w.finish()


def head_kernel_rows(kernel: np.ndarray, deter: int, stoch: int) -> np.ndarray:
    """Reorder a first-layer kernel ``[deter + stoch, out]`` of an official head, which
    reads ``concat([deter, stoch])``, for wmblocks' ``concat([stoch, deter])``."""
    if kernel.shape[0] != deter + stoch:
        raise AssertionError(f"kernel rows {kernel.shape[0]} != deter {deter} + stoch {stoch}")
    return np.concatenate([kernel[deter:], kernel[:deter]], 0)


def load_mlp(
    mlp: MLP,
    golden: dict,
    prefix: str,
    out_keys: tuple[str, ...],
    feat_split: tuple[int, int] | None = None,
) -> None:
    """Copy an official ``MLPHead`` (``{prefix}/mlp/linear{i}``, ``norm{i}``, then the
    output linears ``{prefix}/head/{k}`` for ``k`` in ``out_keys``) into ``mlp``.

    Several ``out_keys`` (the continuous policy's ``action/mean`` and ``action/stddev``)
    are concatenated along the output dim, in that order, into our single output layer.
    ``feat_split=(deter, stoch)`` permutes the first layer's kernel rows from the
    reference's ``[deter, stoch]`` input order to wmblocks' ``[stoch, deter]``.
    """
    w = _Writer(mlp, _params(golden, prefix))
    linears, norms, out = _mlp_layers(mlp)
    for i, (linear, norm) in enumerate(zip(linears, norms, strict=True)):
        kernel = w.get(f"mlp/linear{i}/kernel")
        if i == 0 and feat_split is not None:
            kernel = head_kernel_rows(kernel, *feat_split)
        w.linear(linear, f"mlp/linear{i}", kernel=kernel)
        w.norm(norm, f"mlp/norm{i}")
    if out is None:
        raise AssertionError("the golden heads have an output layer")
    kernel = np.concatenate([w.get(f"head/{k}/kernel") for k in out_keys], 1)
    bias = np.concatenate([w.get(f"head/{k}/bias") for k in out_keys], 0)
    w.set(out.weight, kernel.T)
    w.set(out.bias, bias)
    w.finish()


def build_core() -> BlockGRUCore:
    return BlockGRUCore(D, S * C, A, hidden=H, blocks=G, layers=1, norm="rms", act="silu")


def build_rssm(golden: dict) -> RSSM:
    """The golden RSSM as wmblocks blocks, with the official parameters loaded: block GRU
    core, 2-layer prior, one posterior layer, 8 x 4 categorical latents with unimix 1%,
    zero initial state (2024: no learned initial state)."""
    rssm = RSSM(
        build_core(),
        CategoricalLatentHead(H, stoch=S, classes=C, unimix=UNIMIX),
        CategoricalLatentHead(H, stoch=S, classes=C, unimix=UNIMIX),
        embed_dim=E,
        hidden=H,
        prior_layers=2,
        norm="rms",
        act="silu",
        learned_init=False,
    )
    load_rssm(rssm, golden)
    return rssm


_HEAD_KW = dict(units=HEAD_UNITS, layers=HEAD_LAYERS, norm="rms", act="silu")


def build_pol_cont(golden: dict, feat_split=None) -> BoundedNormalActor:
    actor = BoundedNormalActor(HEAD_IN, A, minstd=0.1, maxstd=1.0, **_HEAD_KW)
    keys = ("action/mean", "action/stddev")
    load_mlp(actor.mlp, golden, "heads/pol_cont/params/pol", keys, feat_split)
    return actor


def build_pol_disc(golden: dict, feat_split=None) -> DiscreteActor:
    actor = DiscreteActor(HEAD_IN, 3, unimix=0.0, **_HEAD_KW)
    load_mlp(actor.mlp, golden, "heads/pol_disc/params/pol", ("action/logits",), feat_split)
    return actor


def build_val(golden: dict, feat_split=None) -> TwoHotHead:
    head = TwoHotHead(HEAD_IN, bins=255, **_HEAD_KW)
    load_mlp(head.mlp, golden, "heads/val/params/val", ("logits",), feat_split)
    return head


def build_con(golden: dict, feat_split=None) -> BernoulliHead:
    head = BernoulliHead(HEAD_IN, **_HEAD_KW)
    load_mlp(head.mlp, golden, "heads/con/params/con", ("logit",), feat_split)
    return head


# --- Encoder, decoder and the agent's world model (``encdec/``, ``agent/``) -----------

AGENT_PREFIX = "agent/params"
# Sizes of the golden agent (README "agent/"): the golden RSSM; enc, dec 2 x 16; reward
# and continue heads 1 x 16; policy and value 2 x 16; obs ``vector[5]``.
OBS_SIZE, AGENT_UNITS = 5, 16


def load_vector_encoder(mlp: MLP, golden: dict, prefix: str) -> None:
    """Copy an official vector ``rssm.Encoder`` (``{prefix}/mlp{i}``, ``mlp{i}norm``;
    no output layer) into the encoder's ``mlp``."""
    w = _Writer(mlp, _params(golden, prefix))
    linears, norms, out = _mlp_layers(mlp)
    if out is not None:
        raise AssertionError("the golden encoder has no output layer")
    for i, (linear, norm) in enumerate(zip(linears, norms, strict=True)):
        w.linear(linear, f"mlp{i}")
        w.norm(norm, f"mlp{i}norm")
    w.finish()


def load_vector_decoder(mlp: MLP, golden: dict, prefix: str, key: str = "vector") -> None:
    """Copy an official vector ``rssm.Decoder`` (``{prefix}/mlp/linear{i}``, ``norm{i}``,
    output ``vec/{key}/pred``) into the decoder's ``mlp``. The decoder reads
    ``concat([stoch, deter])``, wmblocks' feature order: no row permutation."""
    w = _Writer(mlp, _params(golden, prefix))
    linears, norms, out = _mlp_layers(mlp)
    if out is None:
        raise AssertionError("the golden decoder has an output layer")
    for i, (linear, norm) in enumerate(zip(linears, norms, strict=True)):
        w.linear(linear, f"mlp/linear{i}")
        w.norm(norm, f"mlp/norm{i}")
    w.linear(out, f"vec/{key}/pred")
    w.finish()


def agent_size():
    """The golden agent's sizes as a 2024 :class:`~wmblocks.presets.V3Size` (``depth`` and
    ``mults`` are unused: vector observations only)."""
    from wmblocks.presets import V3Size

    return V3Size(
        deter=D,
        hidden=H,
        classes=C,
        units=AGENT_UNITS,
        depth=4,
        stoch=S,
        layers=2,
        head_layers=1,
        ac_layers=2,
        blocks=G,
    )


def build_agent_world_model(golden: dict):
    """``presets.world_model_v3`` (2024) at the golden agent's sizes, with every official
    world-model parameter of ``agent/params/{dyn,enc,dec,rew,con}`` loaded. The reward
    and continue heads read features in wmblocks' order (their first kernel's rows are
    permuted, see :func:`head_kernel_rows`)."""
    from wmblocks.presets import world_model_v3

    wm = world_model_v3({"vector": (OBS_SIZE,)}, A, agent_size(), 2024, unimix=UNIMIX)
    load_rssm(wm.rssm, golden, f"{AGENT_PREFIX}/dyn")
    load_vector_encoder(wm.encoder.encoders["vector"].mlp, golden, f"{AGENT_PREFIX}/enc")
    load_vector_decoder(wm.decoder.decoders["vector"].mlp, golden, f"{AGENT_PREFIX}/dec")
    split = (D, S * C)
    load_mlp(wm.reward_head.mlp, golden, f"{AGENT_PREFIX}/rew", ("logits",), split)
    load_mlp(wm.cont_head.mlp, golden, f"{AGENT_PREFIX}/con", ("logit",), split)
    return wm
