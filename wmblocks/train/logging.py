"""Progress line, metrics on disk (JSONL, TensorBoard when installed), return plot."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque


class Progress:
    """The progress display, a tqdm bar over environment steps with the run's figures
    beside it: env steps/s, updates/s, the last and the mean of the last 10 episode
    returns, the latest evaluation, and per-suite extras (``extras``, e.g. Crafter's
    achievements unlocked). Redraws in place on a terminal; elsewhere (CI, log files)
    writes the same line, formatted by tqdm, every ``every`` seconds."""

    FORMAT = "{l_bar}{bar:20}| {n}/{total} env steps [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

    def __init__(self, total: int, start: int = 0, every: float = 10.0, stream=None):
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.s0 = total, start
        self.bar = None
        if self.tty:
            self.bar = tqdm(
                total=total,
                initial=start,
                unit="step",
                file=self.stream,
                mininterval=0.25,
                dynamic_ncols=True,
                smoothing=0.05,
                bar_format=self.FORMAT,
            )
        self.format_meter = tqdm.format_meter
        self.every = 0.25 if self.tty else every
        self.t0, self.u0, self.last = time.time(), None, 0.0
        self.returns: deque[float] = deque(maxlen=10)
        self.eval: float | None = None
        self.extras: dict[str, float] = {}

    def episode(self, ret: float) -> None:
        self.returns.append(ret)

    def update(self, steps: int, updates: int, force: bool = False) -> None:
        now = time.time()
        if self.u0 is None:
            self.u0 = updates
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.t0, 1e-9)
        recent = (sum(self.returns) / len(self.returns)) if self.returns else math.nan
        last = self.returns[-1] if self.returns else math.nan
        fields = [
            f"{(updates - self.u0) / elapsed:.2f} updates/s",
            f"return last {last:.1f} mean10 {recent:.1f}",
        ]
        if self.eval is not None:
            fields.append(f"eval {self.eval:.1f}")
        fields += [f"{k} {v:.3g}" for k, v in self.extras.items()]
        postfix = " | ".join(fields)
        if self.bar is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(steps - self.bar.n)
            if force:
                self.bar.refresh()
            return
        line = self.format_meter(
            steps,
            self.total,
            elapsed,
            unit="step",
            rate=(steps - self.s0) / elapsed,
            postfix=postfix,
            bar_format=self.FORMAT,
            ascii=True,
        )
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
