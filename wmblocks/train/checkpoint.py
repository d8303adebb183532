"""Checkpoints written atomically: a crash mid-write never loses the previous one."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from wmblocks.errors import UserError


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
    """``torch.save`` to ``path.tmp``, flush to disk, then rename over ``path``."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint, with a message that says what is wrong when it cannot be."""
    if not os.path.exists(path):
        raise UserError(
            f"no checkpoint at {path} to resume from (run without --resume to start a new run)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise UserError(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}); the "
            "run directory's other files are untouched: move the checkpoint away to "
            "start over, or restore it from a copy"
        ) from None
