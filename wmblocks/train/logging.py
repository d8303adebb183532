"""Progress line, metrics on disk (JSONL, TensorBoard when installed), return plot."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque


class Progress:
    """A one-line progress display: env steps, env steps/s, updates/s, last and recent
    episode return, latest evaluation. Redraws in place on a terminal; elsewhere
    (CI, files) prints a plain line every ``every`` seconds."""

    def __init__(self, total: int, start: int = 0, every: float = 10.0, stream=None):
        self.total, self.stream = total, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.25 if self.tty else every
        self.t0, self.s0, self.u0 = time.time(), start, None
        self.last = 0.0
        self.returns: deque[float] = deque(maxlen=10)
        self.eval: float | None = None

    def episode(self, ret: float) -> None:
        self.returns.append(ret)

    def update(self, steps: int, updates: int, force: bool = False) -> None:
        now = time.time()
        if self.u0 is None:
            self.u0 = updates
        if not force and now - self.last < self.every:
            return
        self.last = now
        dt = max(now - self.t0, 1e-9)
        frac = steps / self.total if self.total else 1.0
        bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
        recent = (sum(self.returns) / len(self.returns)) if self.returns else math.nan
        last = self.returns[-1] if self.returns else math.nan
        ev = "" if self.eval is None else f" | eval {self.eval:.1f}"
        line = (
            f"[{bar}] {steps}/{self.total} env steps | {(steps - self.s0) / dt:.1f} steps/s | "
            f"{(updates - self.u0) / dt:.2f} updates/s | return last {last:.1f} "
            f"mean10 {recent:.1f}{ev}"
        )
        end = "\r" if self.tty and not force else "\n"
        self.stream.write(line + (" " * 4) + end)
        self.stream.flush()


class MetricsLog:
    """Appends ``{"step": ..., **metrics}`` lines to ``metrics.jsonl`` in the run
    directory, and to TensorBoard when the ``tensorboard`` package is installed."""

    def __init__(self, run_dir: str, resume_step: int | None = None):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        if resume_step is not None:
            self._rewind(resume_step)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(run_dir, "tb"))
        except ImportError:
            pass

    def _rewind(self, step: int) -> None:
        """Rows written after the checkpoint at ``step`` belong to a stretch of training
        that the resumed run repeats: they move to ``metrics.superseded.jsonl`` (kept,
        never deleted) so that ``metrics.jsonl`` holds one consistent history."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        keep, later = [], []
        for line in lines:
            try:
                (later if json.loads(line)["step"] > step else keep).append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                later.append(line if line.endswith("\n") else line + "\n")
        if not later:
            return
        with open(os.path.join(os.path.dirname(self.path), "metrics.superseded.jsonl"), "a") as f:
            f.writelines(later)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def plot_returns(metrics_path: str, png_path: str, title: str = "") -> bool:
    """Plot ``episode/return`` and ``eval/return`` against env steps into a PNG.
    Returns False (and writes nothing) when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["episode/return"]) for r in rows if "episode/return" in r]
    evals = [(r["step"], r["eval/return"]) for r in rows if "eval/return" in r]
    if not train and not evals:
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), ".", alpha=0.3, label="training episodes")
    if evals:
        ax.plot(*zip(*evals, strict=True), "-o", label="evaluation (policy mode)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)
    return True
