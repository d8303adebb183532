"""Running and importing the recipes from tests."""

import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tiny settings per recipe: a few hundred steps, one update per step
# (train ratio = batch * length), small networks.
TINY = {
    "dreamer_v1": ["--units", "32", "--deter", "32", "--stoch", "8"],
    "dreamer_v2": [
        "--units",
        "32",
        "--deter",
        "32",
        "--hidden",
        "32",
        "--stoch",
        "4",
        "--classes",
        "4",
    ],
    "dreamer_v3": ["--size", "debug"],
}
# Every agent configuration, for tests that run each recipe's update:
# (recipe, environment, extra flags).
AGENTS = [
    ("dreamer_v3", "CartPole-v1", ()),
    ("dreamer_v3", "Pendulum-v1", ("--revision", "2023")),
    ("dreamer_v2", "CartPole-v1", ()),
    ("dreamer_v2", "Pendulum-v1", ()),
    ("dreamer_v1", "Pendulum-v1", ()),
    ("dreamer_v1", "Pendulum-v1", ("--objective", "nce")),
]
COMMON = ["--batch", "4", "--length", "16", "--train-ratio", "64", "--prefill", "100"]
COMMON += ["--eval-episodes", "1", "--log-every", "100"]


def tiny(recipe: str) -> list[str]:
    return [*TINY[recipe], *COMMON]


def run(recipe: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    path = os.path.join(ROOT, "recipes", f"{recipe}.py")
    proc = subprocess.run(
        [sys.executable, path, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def load(recipe: str):
    """Import ``recipes/<recipe>.py`` as a module (for building its agent in-process)."""
    name = f"_recipe_{recipe}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "recipes", f"{recipe}.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module
