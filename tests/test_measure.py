"""Tests for circuits.measure against analytic truth (sines, RC steps) on non-uniform grids."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.errors import NeuroSpiceError
from circuits.measure import (
    MeasureError,
    compare,
    cross_time,
    crossings,
    delay,
    fall_time,
    final_value,
    frequency,
    interp,
    nrmse,
    peak_to_peak,
    period,
    rise_time,
    rms,
    series,
    value_at,
)

F = 1.37e3  # Hz
W = 2 * math.pi * F


def nonuniform_grid(t_end: float, n: int, seed: int = 0) -> torch.Tensor:
    """Sorted random grid on [0, t_end] including both ends (float64)."""
    rng = np.random.default_rng(seed)
    inner = np.sort(rng.uniform(0.0, t_end, n - 2))
    return torch.tensor(np.concatenate([[0.0], inner, [t_end]]), dtype=torch.float64)


def rc_grid(tau: float, n: int = 4000) -> torch.Tensor:
    """Dense-then-sparse grid like an adaptive solver would produce for an RC step."""
    u = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    return 12 * tau * u**1.5


# ---------------------------------------------------------------------------------------------------
# crossings
# ---------------------------------------------------------------------------------------------------


def test_exact_sample_hits_counted_once():
    t = torch.arange(7, dtype=torch.float64)
    v = torch.tensor([0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert crossings(t, v, 1.0, "rise").tolist() == [1.0]
    assert crossings(t, v, 1.0, "fall").tolist() == [3.0]
    assert crossings(t, v, 1.0, "both").tolist() == [1.0, 3.0]
    # touching the level and turning back is not a crossing
    touch = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    assert crossings(torch.arange(5.0), touch, 1.0, "both").numel() == 0
    # sitting on the level then leaving to the other side: one crossing, when it leaves
    plateau = torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    assert crossings(torch.arange(5.0), plateau, 1.0, "both").tolist() == [3.0]
    # plain interpolation
    assert crossings(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 4.0]), 1.0).tolist() == [0.5]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=2, max_size=25), st.integers(-2, 2))
def test_crossings_property_integer_waveforms(vals, level):
    """Integer samples hit the level exactly often; compare with the sign changes of the nonzero samples."""
    v = torch.tensor(vals, dtype=torch.float64)
    t = torch.cumsum(torch.arange(1, len(vals) + 1, dtype=torch.float64), 0)  # non-uniform
    signs = [1 if x > level else -1 for x in vals if x != level]
    changes = [(a, b) for a, b in zip(signs, signs[1:]) if a != b]
    both = crossings(t, v, level, "both")
    rise = crossings(t, v, level, "rise")
    fall = crossings(t, v, level, "fall")
    assert both.numel() == len(changes)
    assert rise.numel() == sum(1 for a, _ in changes if a < 0)
    assert fall.numel() == sum(1 for a, _ in changes if a > 0)
    assert torch.all(both[1:] > both[:-1])  # strictly increasing: no duplicates
    assert torch.equal(torch.sort(torch.cat([rise, fall])).values, both)
    if both.numel():
        assert torch.allclose(interp(t, v, both), torch.full_like(both, float(level)), atol=1e-12)


def test_bad_direction_and_n():
    t = torch.linspace(0, 1, 10, dtype=torch.float64)
    with pytest.raises(MeasureError, match="direction"):
        cross_time(t, t, 0.5, direction="up")
    with pytest.raises(MeasureError, match="nonzero"):
        cross_time(t, t, 0.5, n=0)
    with pytest.raises(MeasureError, match="points"):
        cross_time(t, t[:-1], 0.5)


def test_sine_crossings_nonuniform():
    t = nonuniform_grid(5 / F, 5000)
    v = torch.sin(W * t)
    rises = crossings(t, v, 0.0, "rise")
    # sin crosses 0 rising at m/F, m = 1..4 (t=0 starts exactly on the level: not a crossing)
    assert torch.allclose(rises, torch.arange(1, 5, dtype=torch.float64) / F, rtol=0, atol=1e-10)
    falls = crossings(t, v, 0.0, "fall")
    assert torch.allclose(falls, (torch.arange(0, 5, dtype=torch.float64) + 0.5) / F, rtol=0, atol=1e-10)
    assert float(cross_time(t, v, 0.0, "fall", n=-1)) == pytest.approx(4.5 / F, abs=1e-10)
    assert float(cross_time(t, v, 0.0, "both", n=2)) == pytest.approx(1.0 / F, abs=1e-10)
    assert math.isnan(float(cross_time(t, v, 0.0, "rise", n=5)))
    assert math.isnan(float(cross_time(t, v, 2.0)))


# ---------------------------------------------------------------------------------------------------
# period / frequency
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_period_sine_nonuniform(dtype):
    t = nonuniform_grid(10.3 / F, 20000, seed=1)
    v = 0.5 + 1.2 * torch.sin(W * t + 0.3)
    t, v = t.to(dtype), v.to(dtype)
    tol = 1e-7 if dtype == torch.float64 else 2e-4
    p = period(t, v)
    assert p.dtype == dtype
    assert float(p) * F == pytest.approx(1.0, rel=tol)
    assert float(frequency(t, v, k=5)) / F == pytest.approx(1.0, rel=tol)
    # off the mid level the linear-interpolation error no longer cancels: looser
    assert float(period(t, v, level=0.9, direction="fall")) * F == pytest.approx(1.0, rel=max(tol, 1e-5))
    assert float(period(t, v, direction="both", k=4)) * F == pytest.approx(1.0, rel=tol)


def test_period_too_few_crossings_raises():
    t = nonuniform_grid(2.5 / F, 2000)
    v = torch.cos(W * t)  # rising crossings at 0.75/F and 1.75/F only
    with pytest.raises(MeasureError, match="need at least 4 rise crossings.*found 2") as ei:
        period(t, v, k=3)
    assert isinstance(ei.value, NeuroSpiceError)
    assert float(period(t, v, k=1)) * F == pytest.approx(1.0, rel=1e-7)


def test_period_batched_nan_for_missing():
    t = nonuniform_grid(4.5 / F, 4000)
    f = torch.tensor([F, 2 * F, 0.3 * F], dtype=torch.float64)
    v = torch.sin(2 * math.pi * f[:, None] * t)
    p = period(t, v, k=3)
    assert p.shape == (3,)
    assert float(p[0]) * F == pytest.approx(1.0, rel=1e-7)
    assert float(p[1]) * 2 * F == pytest.approx(1.0, rel=1e-7)
    assert math.isnan(float(p[2]))


# ---------------------------------------------------------------------------------------------------
# RC step: delay, rise/fall time
# ---------------------------------------------------------------------------------------------------


def test_rc_step_half_crossing_and_rise_time():
    tau = 3.3e-6
    t = rc_grid(tau, 20000)
    t = t * (40 / 12)  # 40 tau: the final value 1 - exp(-40) is 1 to double precision
    v = 1 - torch.exp(-t / tau)
    assert float(cross_time(t, v, 0.5)) == pytest.approx(tau * math.log(2), rel=1e-6)
    assert float(rise_time(t, v)) == pytest.approx(tau * math.log(9), rel=1e-6)
    assert float(rise_time(t, v, 0.2, 0.8)) == pytest.approx(tau * math.log(4), rel=1e-6)
    # a shorter window: max = 1 - exp(-T/tau) < 1 sets the levels (min/max, not 0 and 1)
    ts = torch.linspace(0, 3 * tau, 30001, dtype=torch.float64)
    m = 1 - math.exp(-3)
    truth = tau * math.log((1 - 0.1 * m) / (1 - 0.9 * m))
    assert float(rise_time(ts, 1 - torch.exp(-ts / tau))) == pytest.approx(truth, rel=1e-6)
    assert math.isnan(float(fall_time(t, v)))
    # discharge: same shape, falling
    assert float(fall_time(t, 2.0 - 3.0 * v)) == pytest.approx(tau * math.log(9), rel=1e-6)
    assert math.isnan(float(rise_time(t, 2.0 - 3.0 * v)))
    with pytest.raises(MeasureError):
        rise_time(t, v, 0.9, 0.1)


def test_rise_time_uses_min_max_not_initial_final():
    # pulse: 0 -> 1 with an RC edge, then back down to 0.5 at the end; min/max levels are 0.1 and 0.9
    tau = 1.0
    t = torch.linspace(0, 30, 30001, dtype=torch.float64)
    v = torch.where(t < 15, 1 - torch.exp(-t / tau), 0.5 + (1 - math.exp(-15)) * 0.5 * torch.exp(-(t - 15) / tau))
    assert float(rise_time(t, v)) == pytest.approx(math.log(9), rel=1e-5)


def test_rise_time_batched():
    taus = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 20, 20001, dtype=torch.float64)
    v = 1 - torch.exp(-t / taus[:, None])
    r = rise_time(t, v)
    m = 1 - torch.exp(-20 / taus)
    assert torch.allclose(r, taus * torch.log((1 - 0.1 * m) / (1 - 0.9 * m)), rtol=1e-6)


def test_delay_between_shifted_signals():
    t = nonuniform_grid(6 / F, 8000, seed=3)
    d = 0.123 / F
    a = torch.sin(W * t - 0.7)  # starts below 0 and 0.5: first rising crossings inside the window
    b = torch.sin(W * (t - d) - 0.7)
    assert float(delay(t, a, b, 0.0)) == pytest.approx(d, rel=1e-6)
    # off the mid level: interpolation error ~ 1e-7 of a period
    assert float(delay(t, a, b, 0.5, n_a=2, n_b=2)) == pytest.approx(d, abs=1e-6 / F)
    # b inverted: its first falling crossing is also d later than a's first rising one
    assert float(delay(t, a, -b, 0.0, dir_b="fall")) == pytest.approx(d, rel=1e-6)
    # a 50% crossing of a 0..1 signal vs a 0..2 signal
    assert float(delay(t, a, 2 * b, 0.5, 1.0)) == pytest.approx(d, abs=1e-6 / F)


# ---------------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, -1, -3])
@pytest.mark.parametrize("direction", ["rise", "fall", "both"])
def test_batched_cross_time_matches_loop(n, direction):
    g = torch.Generator().manual_seed(0)
    t = nonuniform_grid(3 / F, 600, seed=5)
    amp = torch.tensor([0.2, 0.6, 1.0, 1.5, 0.45], dtype=torch.float64)
    ph = torch.rand(5, generator=g, dtype=torch.float64) * 6
    v = amp[:, None] * torch.sin(W * t + ph[:, None]) + 0.05 * torch.sin(7 * W * t)
    v = v.reshape(5, 1, -1).expand(5, 2, -1)  # two batch dims
    level = 0.5
    got = cross_time(t, v, level, direction, n)
    assert got.shape == (5, 2)
    # a per-row time grid gives the same answer
    got_t = cross_time(t.expand(5, 2, -1), v, level, direction, n)
    assert torch.equal(torch.isnan(got), torch.isnan(got_t))
    n_nan = 0
    for i in range(5):
        c = crossings(t, v[i, 0], level, direction)
        idx = n - 1 if n > 0 else c.numel() + n
        if 0 <= idx < c.numel():
            assert float(got[i, 0]) == float(c[idx]) == float(got[i, 1])
            assert float(got_t[i, 0]) == pytest.approx(float(c[idx]), rel=1e-14)
        else:
            n_nan += 1
            assert math.isnan(float(got[i, 0])) and math.isnan(float(got[i, 1]))
    assert n_nan >= 1  # amplitude 0.2 never reaches the level


def test_batched_level():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    v = t.expand(3, -1)
    lv = torch.tensor([0.25, 0.5, 2.0], dtype=torch.float64)
    got = cross_time(t, v, lv)
    assert got[:2].tolist() == pytest.approx([0.25, 0.5])
    assert math.isnan(float(got[2]))


# ---------------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------------


def test_cross_time_gradient_wrt_amplitude_matches_fd_and_analytic():
    t = nonuniform_grid(1 / F, 3000, seed=7)
    level = 0.4

    def g(amp: torch.Tensor) -> torch.Tensor:
        return cross_time(t, amp * torch.sin(W * t), level)

    amp = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y = g(amp)
    (grad,) = torch.autograd.grad(y, amp)
    h = 1e-6
    with torch.no_grad():
        fd = (g(amp + h) - g(amp - h)) / (2 * h)
    assert float(grad) == pytest.approx(float(fd), rel=1e-6)
    # analytic: t* = asin(L/A)/w  =>  dt*/dA = -L / (A^2 w sqrt(1 - (L/A)^2))
    a = 1.3
    analytic = -level / (a * a * W * math.sqrt(1 - (level / a) ** 2))
    assert float(grad) == pytest.approx(analytic, rel=1e-4)


def test_period_gradient_wrt_frequency():
    t = nonuniform_grid(8.4 / F, 20000, seed=8)

    def g(f: torch.Tensor) -> torch.Tensor:
        return period(t, torch.sin(2 * math.pi * f * t) + 0.1, level=0.1, k=5)

    f = torch.tensor(F, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(g(f), f)
    h = 1e-3
    with torch.no_grad():
        fd = (g(f + h) - g(f - h)) / (2 * h)
    assert float(grad) == pytest.approx(float(fd), rel=1e-5)
    assert float(grad) == pytest.approx(-1 / F**2, rel=1e-5)


def test_gradcheck_cross_time_and_measures_wrt_v_and_t():
    t = torch.linspace(0, 1, 40, dtype=torch.float64) ** 1.3
    t = t.clone().requires_grad_(True)
    v = (torch.sin(9 * t.detach()) + 0.01 * torch.cos(31 * t.detach())).expand(2, -1).clone()
    v[1] *= 0.8
    v.requires_grad_(True)
    torch.autograd.gradcheck(lambda tt, vv: cross_time(tt, vv, 0.3, "both", 2), (t, v))
    torch.autograd.gradcheck(lambda tt, vv: rise_time(tt, vv, 0.2, 0.7), (t, v))
    torch.autograd.gradcheck(lambda tt, vv: value_at(tt, vv, 0.37), (t, v))
    torch.autograd.gradcheck(lambda tt, vv: rms(tt, vv), (t, v))
    t2 = torch.linspace(0, 1, 23, dtype=torch.float64)
    torch.autograd.gradcheck(lambda vv: nrmse(t2, torch.sin(5 * t2), t.detach(), vv), (v,))


def test_nrmse_zero_gradient_is_finite():
    t = nonuniform_grid(1.0, 50)
    v = torch.sin(3 * t).requires_grad_(True)
    e = nrmse(t, torch.sin(3 * t), t, v)
    assert float(e.detach()) == 0.0
    (g,) = torch.autograd.grad(e, v)
    assert torch.isfinite(g).all()


# ---------------------------------------------------------------------------------------------------
# values, rms, nrmse
# ---------------------------------------------------------------------------------------------------


def test_value_at_vs_analytic():
    t = nonuniform_grid(2 / F, 5000, seed=9)
    v = torch.sin(W * t)
    for t0 in [0.0, 0.1 / F, 0.77 / F, 1.5 / F, 2 / F]:
        assert float(value_at(t, v, t0)) == pytest.approx(math.sin(W * t0), abs=1e-5)
    # batched rows, one query time per row
    amps = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    vb = amps[:, None] * v
    t0 = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64) / F
    got = value_at(t, vb, t0)
    assert torch.allclose(got, amps * torch.sin(W * t0), atol=3e-5)
    # scalar time on a batch
    assert value_at(t, vb, 0.25 / F).tolist() == pytest.approx(amps.tolist(), abs=3e-5)
    # outside the window
    assert math.isnan(float(value_at(t, v, -1e-9)))
    assert math.isnan(float(value_at(t, v, 3 / F)))
    # exact samples and duplicate time points
    tt = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    vv = torch.tensor([0.0, 1.0, 5.0, 7.0], dtype=torch.float64)
    assert interp(tt, vv, torch.tensor([0.5, 1.5, 2.0, 3.0])).tolist() == [0.5, 6.0, 7.0, 7.0]


def test_simple_values():
    v = torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    assert peak_to_peak(v).tolist() == [5.0, 4.0]
    assert final_value(v).tolist() == [3.0, 4.0]
    t = nonuniform_grid(3 / F, 30000)
    assert float(rms(t, 2 * torch.sin(W * t))) == pytest.approx(math.sqrt(2), rel=1e-6)
    assert float(rms(t, torch.full_like(t, -0.7))) == pytest.approx(0.7, rel=1e-12)


def test_nrmse_identical_and_offset():
    t = nonuniform_grid(3 / F, 20000, seed=11)
    v = 1.5 * torch.sin(W * t)
    assert float(nrmse(t, v, t, v)) == 0.0
    c = 0.03
    # constant offset on the same grid: rms = c exactly, divisor = sampled peak-to-peak (~3)
    assert float(nrmse(t, v, t, v + c)) == pytest.approx(c / float(peak_to_peak(v)), rel=1e-12)
    assert float(nrmse(t, v, t, v + c)) == pytest.approx(c / 3.0, rel=1e-5)
    # scaled copy on a *different* non-uniform grid: rms of 0.1*1.5 sin = 0.15/sqrt(2), ptp = 3
    t2 = nonuniform_grid(3 / F, 15000, seed=12)  # dense: interpolation error << 0.1
    v2 = 1.1 * 1.5 * torch.sin(W * t2)
    assert float(nrmse(t, v, t2, v2)) == pytest.approx(0.15 / math.sqrt(2) / float(peak_to_peak(v)), rel=2e-5)
    assert float(nrmse(t, v, t2, v2)) == pytest.approx(0.15 / math.sqrt(2) / 3.0, rel=1e-3)
    # same waveform on a different grid: only interpolation error
    assert float(nrmse(t, v, t2, 1.5 * torch.sin(W * t2))) < 1e-4
    # batched
    vb = torch.stack([v, v + c])
    assert nrmse(t, v, t, vb).tolist() == pytest.approx([0.0, c / float(peak_to_peak(v))], rel=1e-12)


def test_nrmse_constant_reference_fallback():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert float(nrmse(t, torch.full_like(t, 2.0), t, torch.full_like(t, 2.1))) == pytest.approx(0.05)
    assert float(nrmse(t, torch.zeros_like(t), t, torch.full_like(t, 0.1))) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------------
# DataFrames
# ---------------------------------------------------------------------------------------------------


def _df(t: torch.Tensor, **cols: torch.Tensor) -> pd.DataFrame:
    d = {"time": t.numpy()}
    d.update({f"v({k})": c.numpy() for k, c in cols.items()})
    return pd.DataFrame(d)


def test_series_and_missing_column():
    t = nonuniform_grid(1 / F, 100)
    df = _df(t, n1=torch.sin(W * t), n2=torch.cos(W * t))
    tt, vv = series(df, "v(n1)")
    assert tt.dtype == vv.dtype == torch.float64
    assert torch.equal(tt, t) and torch.allclose(vv, torch.sin(W * t))
    assert torch.equal(series(df, "V(N2)")[1], series(df, "v(n2)")[1])  # case-insensitive fallback
    with pytest.raises(MeasureError, match=r"'v\(n3\)'.*available columns: time, v\(n1\), v\(n2\)"):
        series(df, "v(n3)")
    with pytest.raises(MeasureError, match="'time'"):
        series(df.drop(columns="time"), "v(n1)")


def test_compare():
    t = nonuniform_grid(3 / F, 3000, seed=13)
    t2 = nonuniform_grid(3 / F, 2500, seed=14)
    ref = _df(t, n1=torch.sin(W * t), n2=2 * torch.cos(W * t), only_ref=t)
    other = _df(t2, n1=torch.sin(W * t2) + 0.02, n2=2 * torch.cos(W * t2), only_other=t2)
    res = compare(ref, other)
    assert set(res) == {"v(n1)", "v(n2)", "worst"}
    assert res["v(n1)"] == pytest.approx(0.01, rel=1e-3)
    assert res["v(n2)"] < 1e-4
    assert res["worst"] == res["v(n1)"]
    assert set(compare(ref, other, columns=["v(n2)"])) == {"v(n2)", "worst"}
    with pytest.raises(MeasureError, match="only_ref"):
        compare(ref, other, columns=["v(only_ref)"])
    with pytest.raises(MeasureError, match="no common columns"):
        compare(ref[["time", "v(only_ref)"]], other[["time", "v(only_other)"]])
