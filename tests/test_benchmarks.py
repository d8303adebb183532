"""The speed benchmark's pieces (benchmarks/compare.py): its FLOP count and the torchrl
peer it times against, at a tiny batch (the timings themselves are benchmarks, not
tests)."""

import sys

import pytest
import torch

from tests.recipes.common import ROOT

sys.path.insert(0, ROOT)

from benchmarks.compare import _build, count_flops  # noqa: E402


def test_flop_count_of_a_matmul_and_its_backward():
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(16, 4)
    # forward 2*8*16*4; backward: the gradient of a only (b needs none), 2*8*4*16
    assert count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 8 * 16 * 4)


@pytest.mark.parametrize("discrete", [True, False])
def test_torchrl_peer_has_wmblocks_parameter_count_and_trains(discrete):
    from benchmarks.bench_update import build_update
    from benchmarks.peers.torchrl_v3 import build

    update, params = build("1m", 2, 8, 3, 24, 6, discrete)
    _, ours = build_update("1m", batch=2, length=8, horizon=3, discrete=discrete)
    assert params == ours  # the same widths on both sides
    update()
    update()
    assert all(torch.isfinite(v).all() for v in update.losses.values())


def test_compare_builds_both_sides():
    update, params = _build("wmblocks", "1m", True, False)
    assert params > 0 and callable(update)
    with pytest.raises(ValueError, match="unknown implementation"):
        _build("sheeprl", "1m", True, False)
