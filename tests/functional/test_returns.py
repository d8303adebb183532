import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import seeded_randn
from wmblocks.functional import cumulative_discount, lambda_return, lambda_return_v1

B = 3
horizons = st.integers(1, 12)
unit = st.floats(0.0, 1.0)


def _inputs(data, T):
    reward = data.draw(seeded_randn((B, T)))
    value = data.draw(seeded_randn((B, T)))
    discount = data.draw(seeded_randn((B, T))).sigmoid()  # gamma_t in (0, 1)
    return reward, value, discount


def _monte_carlo(reward, value_next, discount):
    """sum_{n>=t} (prod_{t<=i<n} gamma_i) r_n + (prod_{t<=i<T} gamma_i) v_T, slow loop."""
    T = reward.shape[1]
    out = torch.zeros_like(reward)
    for t in range(T):
        weight = torch.ones(reward.shape[0], dtype=reward.dtype)
        for n in range(t, T):
            out[:, t] += weight * reward[:, n]
            weight = weight * discount[:, n]
        out[:, t] += weight * value_next[:, -1]
    return out


@given(st.data(), horizons)
def test_lambda_one_is_discounted_monte_carlo_plus_bootstrap(data, T):
    reward, value, discount = _inputs(data, T)
    torch.testing.assert_close(
        lambda_return(reward, value, discount, lam=1.0), _monte_carlo(reward, value, discount)
    )


@given(st.data(), horizons)
def test_lambda_zero_is_one_step_td(data, T):
    reward, value, discount = _inputs(data, T)
    torch.testing.assert_close(
        lambda_return(reward, value, discount, lam=0.0), reward + discount * value
    )


@given(st.data(), horizons, unit, unit)
def test_recursive_form_equals_v1_explicit_sum(data, T, gamma, lam):
    reward, value, _ = _inputs(data, T)
    discount = torch.full_like(reward, gamma)
    torch.testing.assert_close(
        lambda_return(reward, value, discount, lam), lambda_return_v1(reward, value, gamma, lam)
    )


@given(st.data(), horizons, unit)
def test_recursion_with_an_explicit_bootstrap_matches_a_slow_loop(data, T, lam):
    reward, value, discount = _inputs(data, T)
    boot = data.draw(seeded_randn((B,)))
    slow = torch.zeros_like(reward)
    nxt = boot
    for t in reversed(range(T)):
        slow[:, t] = reward[:, t] + discount[:, t] * ((1 - lam) * value[:, t] + lam * nxt)
        nxt = slow[:, t]
    torch.testing.assert_close(lambda_return(reward, value, discount, lam, bootstrap=boot), slow)
    # The default bootstrap is v_T = value_next[:, -1].
    torch.testing.assert_close(
        lambda_return(reward, value, discount, lam),
        lambda_return(reward, value, discount, lam, bootstrap=value[:, -1]),
    )


def test_reference_values():
    # By hand: R_1 = 1 + .5 * 3 = 2.5; R_0 = 1 + .5 * (.5 * 2 + .5 * 2.5) = 2.125.
    # V1: V^1_0 = 1 + .5*2 = 2, V^2_0 = 1 + .5*1 + .25*3 = 2.25, V_lam = .5*2 + .5*2.25.
    reward = torch.tensor([[1.0, 1.0]])
    value = torch.tensor([[2.0, 3.0]])
    expected = torch.tensor([[2.125, 2.5]])
    torch.testing.assert_close(lambda_return(reward, value, torch.full((1, 2), 0.5), 0.5), expected)
    torch.testing.assert_close(lambda_return_v1(reward, value, 0.5, 0.5), expected)


@given(st.data(), st.integers(2, 12))
def test_cumulative_discount_zeroes_every_step_after_a_terminal(data, T):
    discount = data.draw(seeded_randn((B, T))).sigmoid()
    k = data.draw(st.integers(0, T - 2))
    discount[:, k] = 0.0  # s_{k+1} is terminal
    w = cumulative_discount(discount)
    assert torch.equal(w[:, 0], torch.ones(B))
    assert bool((w[:, : k + 1] > 0).all())
    assert torch.equal(w[:, k + 1 :], torch.zeros(B, T - k - 1))
    expected = torch.cat([torch.ones(B, 1), discount[:, :-1]], 1).cumprod(1)
    torch.testing.assert_close(w, expected)


def test_shape_errors_name_the_shapes():
    try:
        lambda_return(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3), 0.95)
    except ValueError as e:
        assert "(2, 4)" in str(e)
    else:
        raise AssertionError("mismatched shapes must raise")
