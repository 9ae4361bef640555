"""Limit-cycle window (model.periodic_from): construction, exact periodicity, plumbing, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from circuits import load_circuit
from circuits.circuit import circuit_from_config
from surrogate.api import SurrogateError
from surrogate.models import LimitCycleSurrogate, Surrogate
from surrogate.time_scale import TimeScaleError
from tests.test_surrogate import (assert_batch_matches_pointwise_and_round_trips,
                                  assert_gradient_matches_central_differences)
from tests.test_time_scale import RC_DISCHARGE

PERIOD = 0.98e-9  # any time unit will do for the plumbing; training measures the nominal design's


@pytest.fixture(scope="module")
def cycle_model() -> Surrogate:
    torch.manual_seed(4)
    model = LimitCycleSurrogate(load_circuit("ring5"), width=12, depth=2, windows=3, periodic_from=1e-9,
                                period=PERIOD, dtype="float64", frequency_degree=0)
    with torch.no_grad():  # a frequency that varies over the box, as after training
        model.nets[-1].log_frequency[-1].weight.normal_(0.0, 0.3)
    return model


def test_edges_are_start_up_windows_then_one_cycle_window(cycle_model):
    assert cycle_model.windows == 3
    edges = cycle_model.edges
    assert torch.allclose(edges[:3], torch.tensor([0.0, 0.5e-9, 1e-9], dtype=torch.float64))
    assert float(edges[3]) >= cycle_model.circuit.tstop  # the cycle runs to the fastest design's warped tstop


def assert_continuous_at_the_cycle_start(m: Surrogate, P: torch.Tensor, window: int = -1) -> None:
    """The learned unknowns just before and at a window's start (default: the limit cycle's) agree
    to 1e-9; the window's start in seconds is each design's own (`unwarp` of its edge)."""
    B = P.shape[0]
    window = window % m.windows
    with torch.no_grad():
        # unwarp then warp of the edge itself rounds to either side: step 1e-13 (relative) off it
        edge = m.unwarp(m.edges[window].expand(B), P, window)
        after, before = edge * (1 + 1e-13), edge * (1 - 1e-13)
        assert bool((m.warp(after, P)[2] == window).all()) and bool((m.warp(before, P)[2] == window - 1).all())
        t = torch.stack([before, after], dim=1).reshape(-1)
        x = m.state(t, P.repeat_interleave(2, dim=0))[:, m.learned_idx].view(B, 2, -1)
    assert (x[:, 0] - x[:, 1]).abs().max() < 1e-9


def test_cycle_window_is_continuous_and_exactly_periodic(cycle_model):
    """The cycle starts at the last start-up window's end state and repeats every period/F(p)."""
    m = cycle_model
    P = m.circuit.space.sample_sobol(4)
    learned = m.learned_idx
    assert_continuous_at_the_cycle_start(m, P)
    with torch.no_grad():
        freq = m.nets[-1].frequency(m.circuit.space.to_unit(P)).squeeze(1)
        assert float(freq.max() / freq.min()) > 1.05  # the designs really run at different speeds
        cycle = PERIOD / freq / m.time_factor(P)  # the cycle's time runs at t·s(p)
        t1 = torch.full((4,), 1.7e-9, dtype=torch.float64)
        a = m.state(t1, P)[:, learned]
        b = m.state(t1 + cycle, P)[:, learned]
        c = m.state(t1 + 0.37 * cycle, P)[:, learned]
    assert (a - b).abs().max() < 1e-9
    assert (a - c).abs().max() > 1e-4  # but not constant


def assert_rate_matches_finite_differences(m: Surrogate, P: torch.Tensor, t: torch.Tensor) -> None:
    """d/dt of the learned unknowns from `state(with_rate=True)` equals central differences (h = 1 fs)."""
    with torch.no_grad():
        _, xdot, _ = m.state(t, P, with_rate=True)
        h = 1e-15
        fd = (m.state(t + h, P) - m.state(t - h, P)) / (2 * h)
    learned = m.learned_idx
    assert torch.allclose(xdot[:, learned], fd[:, learned], rtol=1e-6, atol=1e-6 * float(fd.abs().max()))


def test_cycle_rate_matches_finite_differences_of_the_state(cycle_model):
    assert_rate_matches_finite_differences(cycle_model, cycle_model.circuit.space.sample_sobol(3),
                                           torch.tensor([1.3e-9, 2.2e-9, 3.9e-9], dtype=torch.float64))


def test_cycle_model_batch_pointwise_round_trip_and_gradient(cycle_model, tmp_path):
    assert_batch_matches_pointwise_and_round_trips(cycle_model, 41, tmp_path / "cycle.pt")
    # the cycle's frequency F(p) and its start state both depend on p
    assert_gradient_matches_central_differences(cycle_model, torch.tensor([0.7e-9, 3.1e-9], dtype=torch.float64),
                                                [11e-15, 1.2e-6, 2.5e-6])


@pytest.mark.parametrize("kwargs, match", [
    ({"windows": 1, "periodic_from": 1e-9}, "windows >= 2"),
    ({"windows": 3, "periodic_from": 50e-9}, "periodic_from must lie"),
])
def test_bad_limit_cycle_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(SurrogateError, match=match):
        LimitCycleSurrogate(load_circuit("ring5"), width=8, depth=1, period=PERIOD, **kwargs)


def test_limit_cycle_needs_an_autonomous_oscillating_circuit():
    with pytest.raises((SurrogateError, TimeScaleError), match="autonomous"):  # rc has a PULSE source
        LimitCycleSurrogate(load_circuit("rc"), width=8, depth=1, windows=2, periodic_from=1e-9)
    with pytest.raises(TimeScaleError, match="does not oscillate"):  # the nominal period is measured
        LimitCycleSurrogate(circuit_from_config(RC_DISCHARGE), width=8, depth=1, windows=2, periodic_from=1e-9)


def test_settling_start_is_continuous_has_the_right_rate_and_becomes_periodic():
    """periodic_settle > 0: x = scale·y(c) + (start − scale·y(0))·exp(−n/settle) leaves the start
    state continuously, its rate is d/dt of the state, and it settles onto the periodic orbit."""
    torch.manual_seed(5)
    m = LimitCycleSurrogate(load_circuit("ring5"), width=12, depth=2, windows=3, periodic_from=1e-9, period=PERIOD,
                            periodic_settle=0.25, dtype="float64", frequency_degree=0)
    P = m.circuit.space.sample_sobol(3)
    learned = m.learned_idx
    assert_continuous_at_the_cycle_start(m, P)
    assert_rate_matches_finite_differences(m, P, torch.tensor([1.1e-9, 1.6e-9, 3.3e-9], dtype=torch.float64))
    with torch.no_grad():
        freq = m.nets[-1].frequency(m.circuit.space.to_unit(P)).squeeze(1)
        cycle = PERIOD / freq / m.time_factor(P)
        early = torch.full((3,), 1.05e-9, dtype=torch.float64)
        late = early + 2.2 * cycle  # 2.2 cycles later: exp(-2.2 / 0.25) = 1.5e-4
        gap = lambda t0: (m.state(t0 + cycle, P) - m.state(t0, P))[:, learned].abs().max()  # noqa: E731
        assert float(gap(late)) < 1e-3 * float(gap(early))  # exp(−2 cycles / 0.25) = 3e-4


@pytest.fixture(scope="module")
def shipped_ring5():
    """A PinnModule holding pretrained/ring5.pt's networks (the tests below restore what they change)."""
    from pathlib import Path

    from surrogate.api import load_surrogate
    from surrogate.held_out import HeldOut
    from surrogate.module import PinnModule
    from surrogate.sampling import WindowSampler

    shipped = load_surrogate(Path(__file__).resolve().parent.parent / "pretrained" / "ring5.pt")
    shipped.train()
    sampler = WindowSampler(shipped.circuit.space)
    return PinnModule(shipped, sampler, HeldOut.draw(shipped.circuit, 0, 11, seed=0))


@pytest.fixture(scope="module")
def shipped_reference(shipped_ring5):
    """Four held-out designs (P, t, waveforms) of ring5 from the reference solver."""
    from circuits.simulation import simulate_batch

    model = shipped_ring5.model
    P = model.circuit.space.sample_uniform(4, torch.Generator().manual_seed(31))
    t = torch.linspace(0.0, model.circuit.tstop, 4001, dtype=torch.float64)
    _, ref = simulate_batch(model.circuit, P, t=t, rtol=1e-7)
    return P, t, ref


def test_shipped_start_up_hands_the_cycle_the_reference_phase(shipped_ring5, shipped_reference):
    """The start-up windows' time rates start the cycle where the reference waveform is: over the
    0.3 ns before each design's cycle start, the surrogate matches the reference best at a time
    shift of at most 3 ps (one period is 0.7–1.5 ns; a file without rate heads was
    7.5–22 ps off on the designs checked then; this file is 0.5–2.5 ps off on these four)."""
    model = shipped_ring5.model
    P, t, ref = shipped_reference
    last = model.windows - 1
    shifts = torch.arange(-10.0, 10.5, 0.5, dtype=torch.float64) * 1e-12
    with torch.no_grad():
        start = model.unwarp(model.edges[last].expand(len(P)), P, last)
        for b in range(len(P)):
            near = (t >= start[b] - 0.3e-9) & (t < start[b])
            errors = torch.stack([(model.predict_batch(t[near] + shift, P[b:b + 1])[0] - ref[b, near]).pow(2).mean()
                                  for shift in shifts])
            assert abs(float(shifts[errors.argmin()])) <= 3e-12


def test_shipped_frequency_matches_the_reference_period(shipped_ring5, shipped_reference):
    """F(p) of the shipped cycle, and the rate at which the circuit equations traverse its orbit
    (what F was projected on), give each held-out design's period as the reference solver measures
    it (within 0.3 %)."""
    from circuits.measure import period
    from surrogate.rates import orbit_rates

    module = shipped_ring5
    model, last = module.model, module.windows - 1
    P, t, ref = shipped_reference
    ref_period = torch.stack([period(t, ref[b, :, 0], k=1) for b in range(len(P))])
    net = model.nets[last]
    with torch.no_grad():
        F = net.frequency(model.circuit.space.to_unit(P).to(next(net.parameters()).dtype)).squeeze(1).double()
        rates = orbit_rates(model, P, module.window_start_states(P, last))
    net_period = model.hparams_net["period"] / (F * model.time_factor(P))
    assert float((net_period / ref_period - 1).abs().max()) < 3e-3
    assert float((1 / rates / ref_period - 1).abs().max()) < 3e-3
    assert float((net_period * rates - 1).abs().max()) < 5e-4  # F(p) is the orbit's own rate


@pytest.mark.parametrize("window", [0, -1])
def test_projected_rate_nearly_minimises_the_residual_of_the_shape(shipped_ring5, window):
    """After `project_rate`, a window's time rate (the first start-up window's g(p), the cycle's
    F(p)), the speed at which the equations traverse the shape, is within 1 % of the speed that
    minimises the window's residual: 1 % faster or slower is worse.  The check is the module's own
    collocation loss, through the warped time and the nominal period, not the projection's formula."""
    module = shipped_ring5
    window = window % module.windows
    net = module.model.nets[window]
    head = net.log_rate if window < module.windows - 1 else net.log_frequency
    kept = {k: v.clone() for k, v in head.state_dict().items()}
    with torch.no_grad():
        head.linear.weight.mul_(0.5)  # the rate off by up to a few %
        head.linear.bias.add_(0.02)
    from surrogate.callbacks import RateProjection

    assert RateProjection(designs=128).project(module, window)
    designs = module.circuit.space.sample_sobol(16, seed=3)
    t = module.sampler.window_times(module.model, 256, 16, window, seed=4)

    def loss(shift: float) -> float:
        with torch.no_grad():
            head.linear.bias.add_(shift)
            value = float(module.loss_terms(t, designs, window)["residual"])
            head.linear.bias.sub_(shift)
        return value

    best = loss(0.0)
    assert best < loss(0.01) and best < loss(-0.01)
    after = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(kept)
    # the shipped head was projected in training: the fit lands back on it
    assert torch.allclose(after["linear.weight"], kept["linear.weight"], atol=2e-3)
    assert torch.allclose(after["linear.bias"], kept["linear.bias"], atol=2e-3)


def test_a_projection_that_raises_the_residual_is_undone(shipped_ring5, monkeypatch):
    """The rate projection after an L-BFGS run is undone when it makes the window's residual worse
    (what a collapsed cycle's meaningless speeds do)."""
    from surrogate.callbacks import RateProjection, WindowSchedule

    module = shipped_ring5
    net = module.model.nets[0]
    kept = {k: v.clone() for k, v in net.state_dict().items()}
    t, P, starts = module.sampler.lbfgs_points(module.model, 0, seed=5)
    P, starts = P[::8], starts[::8]  # 16 designs x 4 times keep it quick
    t = t[::8]
    projection = RateProjection()

    def bad_projection(module, window):
        with torch.no_grad():
            net.log_rate.linear.bias.add_(0.3)  # 35 % too fast
        return True

    monkeypatch.setattr(projection, "project", bad_projection)
    schedule = WindowSchedule(lbfgs_steps=2)
    schedule.phases = [projection]
    before = net.log_rate.linear.bias.detach().clone()
    schedule.optimise(module, 0, (t, P, starts))
    assert torch.equal(net.log_rate.linear.bias.detach(), before)
    monkeypatch.undo()
    net.load_state_dict(kept)


def test_check_cycle_accepts_the_shipped_cycle_and_flags_a_collapsed_one(shipped_ring5):
    """The shipped ring5 cycle agrees with its own start-up windows' last period; a cycle flattened to
    its start state (what a collapse onto the DC point looks like between jumps) does not."""
    from surrogate.callbacks.limit_cycle import CYCLE_MISMATCH_LIMIT, CycleDistillation

    module = shipped_ring5
    last = module.windows - 1
    assert CycleDistillation.check(module, seed=3) < CYCLE_MISMATCH_LIMIT / 10
    out = module.model.nets[last].cycle.mlp[-1]
    kept = out.weight.detach().clone()
    with torch.no_grad():
        out.weight.zero_()
    flattened = CycleDistillation.check(module, seed=3)
    with torch.no_grad():
        out.weight.copy_(kept)
    assert flattened > 10 * CYCLE_MISMATCH_LIMIT


def test_legendre_head_features_are_products_of_legendre_polynomials():
    from surrogate.nets import LegendreHead

    head = LegendreHead(2, 3)
    assert head.powers.shape == (9, 2)  # total degree 1..3 in 2 variables: 10 − 1 (no constant)
    u = torch.rand(50, 2, dtype=torch.float64)
    x = 2 * u - 1
    feats = head.to(torch.float64).features(u)
    legendre = {0: torch.ones_like(x), 1: x, 2: (3 * x**2 - 1) / 2, 3: (5 * x**3 - 3 * x) / 2}
    for j, (a, b) in enumerate(head.powers.tolist()):
        assert torch.allclose(feats[:, j], legendre[a][:, 0] * legendre[b][:, 1], atol=1e-12)
    assert float(head(u).abs().max()) == 0.0  # starts at log F = 0


@pytest.fixture(scope="module")
def legendre_cycle_model() -> Surrogate:
    torch.manual_seed(6)
    model = LimitCycleSurrogate(load_circuit("ring5"), width=12, depth=2, windows=3, periodic_from=1e-9,
                                period=PERIOD, dtype="float64", frequency_degree=3)
    with torch.no_grad():  # F(p) and the start-up windows' time rates g(p) vary over the box
        model.nets[-1].log_frequency.linear.weight.normal_(0.0, 0.1)
        for net in model.nets[:-1]:
            net.log_rate.linear.weight.normal_(0.0, 0.05)
    return model


def test_rate_heads_keep_the_chain_continuous_with_the_right_rate(legendre_cycle_model):
    """With time-rate heads in the start-up windows, the waveform is still continuous at every window
    edge (now at a different time for each design), d/dt (which now carries g(p)) matches finite
    differences of the state, and `unwarp` inverts `warp`."""
    m = legendre_cycle_model
    P = m.circuit.space.sample_sobol(3)
    with torch.no_grad():
        rates = torch.cat([net.time_rate(m.circuit.space.to_unit(P)) for net in m.nets[:-1]])
        assert float(rates.max() / rates.min()) > 1.02  # the heads really change the speed
        edges = torch.stack([m.unwarp(m.edges[1].expand(3), P, 1), m.unwarp(m.edges[2].expand(3), P, 2)])
        assert float((edges[:, 1:] - edges[:, :1]).abs().min()) > 1e-12  # the designs' edges differ
        t = torch.linspace(0.0, 4e-9, 9, dtype=torch.float64).repeat(3)
        PP = P.repeat_interleave(9, dim=0)
        w, speed, win = m.warp(t, PP)
        assert torch.allclose(m.unwarp(w, PP, win), t, rtol=1e-13, atol=1e-22)
        grid = m.warp_grid(t[:9], P)  # one clock per design, as predict_batch uses it
        for got, want in zip(grid, (w, speed, win)):  # the same arithmetic on (3, ·) and (27, ·) batches:
            assert torch.allclose(got.reshape(-1).double(), want.double(), rtol=1e-14, atol=0)  # last-bit rounding
        with pytest.raises(ValueError, match="needs `window`"):
            m.state(t, PP, warped=(w, speed))
    for window in (1, 2):
        assert_continuous_at_the_cycle_start(m, P, window)
    assert_rate_matches_finite_differences(m, P, torch.tensor([0.2e-9, 0.7e-9, 2.5e-9], dtype=torch.float64))


def test_rate_heads_round_trip_and_carry_the_design_gradient(legendre_cycle_model, tmp_path):
    m = legendre_cycle_model
    assert_batch_matches_pointwise_and_round_trips(m, 41, tmp_path / "legendre.pt")
    assert_gradient_matches_central_differences(m, torch.tensor([0.7e-9, 3.1e-9], dtype=torch.float64),
                                                [11e-15, 1.2e-6, 2.5e-6])


def test_cycle_mismatch_leaves_out_points_before_the_transient_starts(shipped_ring5):
    """A period so long that one cycle before the cycle window reaches back before t = 0 gives the
    distillation nothing to compare (the start-up windows say nothing there), not an extrapolation."""
    from surrogate.callbacks.limit_cycle import cycle_mismatch

    model = shipped_ring5.model
    designs = model.circuit.space.sample_sobol(8)
    cycles = torch.rand(8 * 16, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    period = model.hparams_net["period"]
    with torch.no_grad():
        assert float(cycle_mismatch(shipped_ring5, designs, cycles)) > 0
        model.hparams_net["period"] = 1e3 * model.circuit.tstop
        try:
            assert float(cycle_mismatch(shipped_ring5, designs, cycles)) == 0.0
        finally:
            model.hparams_net["period"] = period


def test_distillation_stops_when_its_time_allowance_is_spent(shipped_ring5, caplog):
    """A 1 ns allowance: one Adam step of the distillation, not the thousand asked for."""
    import logging

    from surrogate.callbacks.limit_cycle import CycleDistillation

    net = shipped_ring5.model.cycle_net
    kept = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        with caplog.at_level(logging.INFO, logger="surrogate"):
            mismatch = CycleDistillation.distil(shipped_ring5, 1000, seed=3, seconds=1e-9)
    finally:
        net.load_state_dict(kept)
    assert math.isfinite(mismatch)
    assert "distillation stopped after 1 of 1000 steps" in caplog.text
