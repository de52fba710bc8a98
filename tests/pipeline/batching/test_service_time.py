"""pipeline/batching/service_time.py: a decayed least-squares fit of seconds = fixed + per_item * n."""

from __future__ import annotations

import pytest

from pipeline.batching.service_time import ServiceTime


def test_prior_gives_sane_first_estimates() -> None:
    st = ServiceTime(fixed_s=0.005, per_item_s=0.004)
    assert st.observed == 0
    fixed, per_item = st.coefficients()
    assert fixed == pytest.approx(0.005, abs=1e-9)
    assert per_item == pytest.approx(0.004, abs=1e-9)
    assert st.estimate(1) == pytest.approx(0.009, abs=1e-9)
    assert st.estimate(32) == pytest.approx(0.005 + 0.128, abs=1e-9)


def test_learns_fixed_and_per_item_from_several_sizes() -> None:
    st = ServiceTime()  # prior 5 ms + 4 ms/item
    for _ in range(60):
        for n in (1, 4, 16, 32):
            st.observe(n, 0.003 + 0.0015 * n)
    assert st.observed == 240
    fixed, per_item = st.coefficients()
    assert fixed == pytest.approx(0.003, abs=1e-5)
    assert per_item == pytest.approx(0.0015, abs=1e-6)
    assert st.estimate(10) == pytest.approx(0.018, abs=1e-5)


def test_fit_is_robust_to_noise() -> None:
    st = ServiceTime()
    noise = [0.0004, -0.0003, 0.0002, -0.0004, 0.0001, -0.0002, 0.0003, 0.0]
    for i in range(200):
        n = (1, 2, 8, 24, 32)[i % 5]
        st.observe(n, 0.002 + 0.001 * n + noise[i % len(noise)])
    fixed, per_item = st.coefficients()
    assert fixed == pytest.approx(0.002, abs=5e-4)
    assert per_item == pytest.approx(0.001, abs=5e-5)


def test_follows_a_change_of_speed() -> None:
    st = ServiceTime()
    for _ in range(20):
        for n in (2, 8, 16):
            st.observe(n, 0.002 + 0.001 * n)
    assert st.estimate(16) == pytest.approx(0.018, abs=1e-4)
    # The machine gets three times slower (a noisy neighbour): recent batches dominate the fit.
    for _ in range(20):
        for n in (2, 8, 16):
            st.observe(n, 3 * (0.002 + 0.001 * n))
    assert st.estimate(16) == pytest.approx(0.054, rel=0.01)
    fixed, per_item = st.coefficients()
    assert fixed == pytest.approx(0.006, abs=5e-4)
    assert per_item == pytest.approx(0.003, abs=5e-5)


def test_one_outlier_does_not_take_over() -> None:
    st = ServiceTime()
    for _ in range(20):
        for n in (2, 8, 16):
            st.observe(n, 0.002 + 0.001 * n)
    st.observe(8, 1.0)  # a single stall (GC pause)
    assert st.estimate(8) < 0.2  # far from the 1 s outlier...
    assert st.estimate(8) > 0.010  # ...but it is noticed
    for _ in range(20):
        for n in (2, 8, 16):
            st.observe(n, 0.002 + 0.001 * n)
    assert st.estimate(8) == pytest.approx(0.010, abs=5e-4)


def test_same_size_only_gives_a_pro_rata_estimate() -> None:
    st = ServiceTime()
    for _ in range(300):  # enough for the prior (sizes 1 and 8) to decay away
        st.observe(10, 0.050)
    fixed, per_item = st.coefficients()
    assert fixed == 0.0
    assert per_item == pytest.approx(0.005, rel=1e-6)
    assert st.estimate(10) == pytest.approx(0.050, rel=1e-6)
    assert st.estimate(20) == pytest.approx(0.100, rel=1e-6)
    assert st.estimate(1) == pytest.approx(0.005, rel=1e-6)


def test_ignores_empty_or_negative_observations() -> None:
    st = ServiceTime(fixed_s=0.005, per_item_s=0.004)
    before = st.coefficients()
    st.observe(0, 0.5)
    st.observe(4, -1.0)
    assert st.observed == 0
    assert st.coefficients() == before


def test_coefficients_never_negative() -> None:
    st = ServiceTime()
    # Bigger batches faster than small ones (nonsense, but measurements can be): slope clamps to 0.
    for _ in range(50):
        st.observe(1, 0.020)
        st.observe(32, 0.010)
    fixed, per_item = st.coefficients()
    assert per_item == 0.0
    assert fixed > 0.0
    assert st.estimate(32) == pytest.approx(st.estimate(1))


# ---- RoutedServiceTime: per encoder, by its share of the events -----------------------------------------------
def test_routed_without_parts_is_one_fit_over_whole_batches() -> None:
    from pipeline.batching.service_time import RoutedServiceTime

    routed, plain = RoutedServiceTime(), ServiceTime()
    for n in (1, 8, 32) * 20:
        routed.observe(n, 0.002 + 0.001 * n)
        plain.observe(n, 0.002 + 0.001 * n)
    assert routed.estimate(16) == pytest.approx(plain.estimate(16))


def test_routed_sums_each_encoders_estimate_for_its_share() -> None:
    from pipeline.batching.service_time import RoutedServiceTime

    st = RoutedServiceTime()
    for _ in range(100):  # 3 of 4 events to a fast encoder, 1 of 4 to a slow one
        for n in (4, 8, 16, 32):
            fast, slow = 3 * n // 4, n // 4
            st.observe_parts({"fast": (fast, 0.001 + 0.001 * fast), "slow": (slow, 0.004 + 0.01 * slow)})
    assert st.shares["fast"] / (st.shares["fast"] + st.shares["slow"]) == pytest.approx(0.75, abs=1e-6)
    # 32 events: 24 to fast (25 ms), 8 to slow (84 ms)
    assert st.estimate(32) == pytest.approx(0.025 + 0.084, abs=1e-4)
    # one event: it goes to one encoder, but which is not known before: charged both (deadlines stay safe)
    assert st.estimate(1) == pytest.approx(0.002 + 0.014, abs=1e-4)


def test_routed_follows_a_change_of_mix() -> None:
    from pipeline.batching.service_time import RoutedServiceTime

    st = RoutedServiceTime()
    for _ in range(100):
        for n in (8, 32):
            st.observe_parts({"fast": (n, 0.001 + 0.001 * n)})
    only_fast = st.estimate(32)
    for _ in range(100):
        for n in (8, 32):
            st.observe_parts({"slow": (n, 0.004 + 0.01 * n)})
    assert st.estimate(32) == pytest.approx(0.324, rel=1e-3)  # the fast encoder's share decayed away
    assert only_fast == pytest.approx(0.033, rel=1e-3)
