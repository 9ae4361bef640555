"""surrogate/rates.py: the speed at which the circuit equations traverse a learned shape."""

from __future__ import annotations

import torch

from circuits.circuit import circuit_from_config
from surrogate.models import PlainSurrogate
from surrogate.rates import _traversal_speeds
from tests.test_time_scale import RC_DISCHARGE


def test_traversal_speed_of_a_distorted_rc_discharge_is_its_time_consistent_speed():
    """A shape that runs through the exact RC discharge v = exp(−σ(w)/RC) with a non-uniform clock
    σ(w) = w + a·w²/W takes σ(W) = (1 + a)·W of physical time over w ∈ [0, W]: the traversal speed
    must be 1/(1 + a) for every design.  The single least-squares speed of the window, which weights
    the fast start by its larger rate, is measurably off."""
    model = PlainSurrogate(circuit_from_config(RC_DISCHARGE), width=4, depth=1, dtype="float64")
    P = torch.tensor([[1e3, 1e-12], [2e3, 0.6e-12]], dtype=torch.float64)
    tau = P[:, 0] * P[:, 1]
    points, a = 200, 0.2
    W = 2 * tau.unsqueeze(1)
    w = W * (torch.arange(points, dtype=torch.float64) + 0.5) / points  # (D, points), midpoints
    sigma, dsigma = w + a * w**2 / W, 1 + 2 * a * w / W
    v = torch.exp(-sigma / tau.unsqueeze(1))
    rate = -v / tau.unsqueeze(1) * dsigma  # dv/dw along the distorted shape
    PP = P.repeat_interleave(points, dim=0)
    bound = model.physics.bind(PP)
    t = torch.zeros(len(PP), dtype=torch.float64)  # autonomous
    x = model.physics.pinned_values(bound, t).index_copy(1, model.learned_idx, v.reshape(-1, 1))
    speeds = _traversal_speeds(model, bound, x, rate.reshape(-1, 1), t, points)
    assert torch.allclose(speeds, torch.full_like(speeds, 1 / (1 + a)), rtol=1e-9)
    least_squares = (rate**2 / dsigma).sum(dim=1) / (rate**2).sum(dim=1)  # Σ A²·λ_i / Σ A², λ_i = 1/σ'
    assert float((least_squares * (1 + a) - 1).abs().min()) > 0.02


def test_a_shape_that_does_not_move_with_the_equations_gets_its_non_positive_speed():
    """A shape running against the dynamics (a collapsed window) reports its least-squares speed,
    which is negative, so `project_rate` rejects it instead of fitting a harmonic mean."""
    model = PlainSurrogate(circuit_from_config(RC_DISCHARGE), width=4, depth=1, dtype="float64")
    P = torch.tensor([[1e3, 1e-12]], dtype=torch.float64).repeat(8, 1)
    bound = model.physics.bind(P)
    t = torch.zeros(8, dtype=torch.float64)
    v = torch.linspace(0.9, 0.2, 8, dtype=torch.float64).unsqueeze(1)
    x = model.physics.pinned_values(bound, t).index_copy(1, model.learned_idx, v)
    speeds = _traversal_speeds(model, bound, x, +v / 1e-9, t, 8)  # rising where the RC decays
    assert speeds.shape == (1,) and float(speeds[0]) < 0
