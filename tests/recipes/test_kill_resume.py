"""kill -9 at random moments, then --resume (issue 16): every replay row up to the
checkpoint kept exactly, none duplicated, counters and metrics consistent. The longer
version with more kills is ``benchmarks/kill_resume.py``."""

import random

from benchmarks.kill_resume import trial


def test_runs_killed_at_random_moments_resume_with_nothing_lost(tmp_path):
    rng = random.Random(0)
    results = [trial(str(tmp_path), "dreamer_v3", 300, 100, rng, i) for i in range(2)]
    assert sum(r["killed"] for r in results) >= 1, results
    assert all(r["rows_checked"] > 0 for r in results)
