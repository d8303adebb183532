"""benchmarks/evaluate.py: many-episode evaluation of a finished run's checkpoint."""

import json
import os
import subprocess
import sys

from tests.recipes.common import ROOT, run, tiny

SCRIPT = os.path.join(ROOT, "benchmarks", "evaluate.py")


def evaluate(*args):
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=600
    )


def test_evaluates_a_checkpoint_and_reports_clear_errors(tmp_path):
    d = str(tmp_path / "dreamer_v1-Pendulum-v1-seed0")
    run("dreamer_v1", *tiny("dreamer_v1"), "--steps", "200", "--eval-every", "0", "--logdir", d)
    results = []
    for name in ("a.json", "b.json"):
        out = str(tmp_path / name)
        proc = evaluate(d, "--episodes", "3", "--out", out)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "(200 env steps): mean" in proc.stdout and "over 3 episodes" in proc.stdout
        with open(out) as f:
            results.append(json.load(f))
    res = results[0]
    assert res["recipe"] == "dreamer_v1" and res["env"] == "Pendulum-v1"
    assert len(res["returns"]) == 3 and all(-1700.0 < r <= 0.0 for r in res["returns"])
    assert abs(res["mean"] - sum(res["returns"]) / 3) < 1e-9
    assert res["min"] <= res["mean"] <= res["max"]
    assert results[1]["returns"] == res["returns"]  # seeded: the same episodes again

    wrong = evaluate(d, "--recipe", "dreamer_v2", "--episodes", "1")
    assert wrong.returncode == 2 and "does not match this recipe" in wrong.stderr
    # The recipe comes from the checkpoint: a directory without one says so.
    unnamed = evaluate(str(tmp_path), "--episodes", "1")
    assert unnamed.returncode == 2 and "has no checkpoint.pt" in unnamed.stderr
    missing = evaluate(str(tmp_path / "dreamer_v3-none"), "--episodes", "1")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
