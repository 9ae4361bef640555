"""Per-design time unit (warped time t·s(p)): analytic rate, fit quality, warped surrogate plumbing."""

from __future__ import annotations

import pytest
import torch

from circuits import load_circuit
from circuits.circuit import circuit_from_config
from circuits.measure import period
from circuits.simulation import simulate_batch
from surrogate.models import LimitCycleSurrogate, Surrogate
from surrogate.time_scale import TimeScaleError, fit_time_scale, linearised_rate
from tests.test_surrogate import (assert_batch_matches_pointwise_and_round_trips,
                                  assert_gradient_matches_central_differences)

RC_DISCHARGE = {
    "name": "rc_discharge",
    "netlist": "RC discharge\n.param r=1k c=1p\nR1 a 0 {r}\nC1 a 0 {c}\n.ic v(a)=1\n.tran 1p 5n uic\n.end\n",
    "params": {"r": {"low": 500.0, "high": 2000.0, "log": True, "nominal": 1000.0},
               "c": {"low": 0.5e-12, "high": 2e-12, "log": True, "nominal": 1e-12}},
    "outputs": ["v(a)"],
}


def test_linearised_rate_of_an_rc_discharge_is_one_over_rc():
    circuit = circuit_from_config(RC_DISCHARGE)
    P = torch.tensor([[1e3, 1e-12], [2e3, 0.5e-12], [700.0, 1.7e-12]], dtype=torch.float64)
    expected = 1.0 / (P[:, 0] * P[:, 1])
    assert torch.allclose(linearised_rate(circuit, P), expected, rtol=1e-9)
    # log s is exactly linear in log r, log c (the unit cube is in log space): the fit is exact
    _, worst = fit_time_scale(circuit, designs=32)
    assert worst < 1e-9


@pytest.fixture(scope="module")
def ring_model() -> Surrogate:
    torch.manual_seed(2)
    return LimitCycleSurrogate(load_circuit("ring5"), width=8, depth=2, windows=4, periodic_from=3e-9,
                               state_input=True, frequency_degree=0, dtype="float64")


def test_ring5_time_unit_tracks_the_reference_period(ring_model):
    """period(p)·s(p) is nearly constant over the box although the period varies ~3x between corners."""
    assert ring_model.time_fit_error < 0.02
    c = ring_model.circuit
    corners = torch.tensor([[8e-15, 1.6e-6, 3.2e-6], [16e-15, 0.8e-6, 1.6e-6]], dtype=torch.float64)
    P = torch.cat([c.space.nominal_vector()[None], corners, c.space.sample_uniform(2, torch.Generator().manual_seed(3))])
    t, y = simulate_batch(c, P, t=torch.linspace(0, c.tstop, 2001, dtype=torch.float64), rtol=1e-4)
    periods = torch.stack([period(t, y[b, :, 0], k=1) for b in range(len(P))])
    aligned = periods * ring_model.time_factor(P)
    assert float(ring_model.time_factor(P[:1])) == pytest.approx(1.0, abs=1e-12)
    assert float(aligned.max() / aligned.min()) < 1.05
    assert float(periods.max() / periods.min()) > 2.5


def test_warped_surrogate_batch_pointwise_round_trip_and_gradient(ring_model, tmp_path):
    assert_batch_matches_pointwise_and_round_trips(ring_model, 41, tmp_path / "warp.pt")
    # d v(t)/dp includes the warp's own dependence on p (window choice and chain)
    assert_gradient_matches_central_differences(ring_model, torch.tensor([0.7e-9, 3.1e-9], dtype=torch.float64),
                                                [11e-15, 1.2e-6, 2.5e-6])


def test_time_scale_rejects_circuits_with_source_corners():
    with pytest.raises(TimeScaleError, match="autonomous"):
        LimitCycleSurrogate(load_circuit("rc"), width=8, depth=1, periodic_from=1e-9)


def test_late_windows_train_only_designs_that_reach_them_and_adaptive_points_have_larger_residuals():
    """With a time scale, window k's collocation designs all have tstop·s(p) beyond the window's
    start; lbfgs_adaptive swaps half the L-BFGS set for the largest residuals of 4x candidates."""
    from functools import partial

    from tests.surrogate_helpers import build_run

    torch.manual_seed(3)
    module, _, _ = build_run(["circuit=ring5", "model=limit_cycle", "model.width=8", "model.depth=1",
                              "model.windows=6", "model.periodic_from=3.6e-9", "model.frequency_degree=0",
                              "model.period=0.98e-9",
                              "model.dtype=float64", "surrogate.val_designs=1", "surrogate.val_points=11",
                              "surrogate.lbfgs_designs=8", "surrogate.lbfgs_times=8", "surrogate.lbfgs_adaptive=0.5"])
    model, sampler = module.model, module.sampler
    last = model.windows - 1
    designs = sampler.designs(model, 16, seed=5, window=last)
    assert bool((model.circuit.tstop * model.time_factor(designs) > model.edges[last]).all())
    t, P, starts = sampler.lbfgs_points(model, 1, seed=9, residuals=partial(module.point_residuals, window=1))
    assert t.shape == (64,) and P.shape == (64, 3) and starts.shape[0] == 64
    with torch.no_grad():
        r2 = module.point_residuals(t, P, starts, 1)
    uniform, chosen = r2[:32], r2[32:]
    assert float(chosen.min()) >= float(uniform.median())
