"""Checkpoints written atomically: a crash mid-write never loses the previous one.

A run directory holds ``checkpoint.pt`` (the newest) and, with ``keep > 1``, the
``keep - 1`` before it as ``checkpoint_<steps>.pt``. Each file carries
:data:`FORMAT` and the wmblocks version that wrote it; :func:`load_checkpoint` refuses
other formats with a message that says so. The replay is not in the checkpoint: it
records the replay's write position (see :class:`~wmblocks.train.replay.SequenceReplay`).
"""

from __future__ import annotations

import errno
import glob
import os
import random
import re

import numpy as np
import torch

import wmblocks
from wmblocks.errors import UserError

# 1: the replay copied next to each checkpoint (wmblocks 0.1); 2: the replay's write
# position only, format and version fields.
FORMAT = 2
NAME = "checkpoint.pt"


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) generator states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (global state, saved on purpose)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict) -> None:
    """``torch.save`` to ``path.tmp``, flush to disk, then rename over ``path``.

    ``state`` gains ``format`` and ``wmblocks`` (the version). A failed write (disk
    full, read-only directory) removes the temporary file, leaves ``path`` as it was
    and raises :class:`~wmblocks.errors.UserError` naming the file and the cause."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save({**state, "format": FORMAT, "wmblocks": wmblocks.__version__}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        why = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only"}
        raise UserError(
            f"cannot write the checkpoint {path}: {why.get(e.errno, e.strerror or e)}; the "
            "previous checkpoint is unchanged (free space or fix permissions, then --resume)"
        ) from None


def rotate_checkpoints(run_dir: str, state: dict, keep: int = 1) -> str:
    """Write ``state`` as ``run_dir/checkpoint.pt`` and keep the ``keep - 1`` previous
    ones as ``checkpoint_<steps>.pt`` (older ones are deleted). The previous newest is
    hard-linked to its numbered name before the new one replaces it, so a crash at any
    point leaves a loadable ``checkpoint.pt``. Returns the path written."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    path = os.path.join(run_dir, NAME)
    if keep > 1 and os.path.exists(path):
        previous = _steps_of(path)
        if previous is not None:
            older = os.path.join(run_dir, f"checkpoint_{previous}.pt")
            if not os.path.exists(older):
                os.link(path, older)
    save_checkpoint(path, state)
    numbered = sorted(_numbered(run_dir), key=lambda p: _number(p))
    for old in numbered[: max(len(numbered) - (keep - 1), 0)]:
        os.remove(old)
    return path


def _numbered(run_dir: str) -> list[str]:
    return [p for p in glob.glob(os.path.join(run_dir, "checkpoint_*.pt")) if _number(p) >= 0]


def _number(path: str) -> int:
    m = re.fullmatch(r"checkpoint_(\d+)\.pt", os.path.basename(path))
    return int(m.group(1)) if m else -1


def _steps_of(path: str) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["count"]["steps"])
    except Exception:  # an unreadable previous checkpoint is replaced, not kept
        return None


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint, with a message that says what is wrong when it cannot be:
    missing, truncated or corrupt, or written in another :data:`FORMAT`."""
    if not os.path.exists(path):
        raise UserError(
            f"no checkpoint at {path} to resume from (run without --resume to start a new run)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise UserError(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}); the "
            "run directory's other files are untouched: move the checkpoint away to "
            "start over (or to resume from an older checkpoint_<steps>.pt kept by "
            "--keep, rename that one to checkpoint.pt), or restore it from a copy"
        ) from None
    if not isinstance(ckpt, dict) or "count" not in ckpt:
        raise UserError(f"{path} is not a wmblocks checkpoint (no training counters in it)")
    fmt = ckpt.get("format", 1)
    if fmt != FORMAT:
        by = ckpt.get("wmblocks", "0.1")
        raise UserError(
            f"checkpoint {path} has format {fmt} (written by wmblocks {by}); this wmblocks "
            f"({wmblocks.__version__}) reads format {FORMAT}: resume it with wmblocks {by}, "
            "or start a new run"
        )
    return ckpt
