"""A per-design time unit for autonomous circuits: time warp t̃ = t·s(p), s(nominal) = 1.

Over a design space the waveforms of an oscillator run at different speeds (ring5: period 0.65 to
1.5 ns), so at a fixed time the designs sit at different phases and one network per time window
must fit them all.  Measured in warped time t̃ they nearly line up.  s(p) is the spectral radius of
the circuit's linearisation at its DC operating point, relative to the nominal design's (on ring5
period·s(p) varies by ±1.2 % over the box, against a factor 2.3 in the period itself).  It is
stored as a quadratic fit of log s in the unit design cube: cheap, smooth and differentiable in p,
with no DC solve at inference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.circuit import Circuit
from circuits.errors import NeuroSpiceError
from circuits.simulation import dae_of
from circuits.solve import operating_point

__all__ = ["TimeScaleError", "quadratic_features", "linearised_rate", "fit_time_scale", "largest_factor",
           "nominal_period"]

FIT_DESIGNS = 512


class TimeScaleError(NeuroSpiceError):
    """The circuit cannot get a per-design time unit (no design space, sources, singular charges)."""


def quadratic_features(u: Tensor) -> Tensor:
    """[1, u_i, u_i·u_j (i ≤ j)] (N, 1 + P + P(P+1)/2) of unit-cube designs u (N, P)."""
    P = u.shape[1]
    pairs = [u[:, i] * u[:, j] for i in range(P) for j in range(i, P)]
    return torch.stack([torch.ones_like(u[:, 0]), *u.unbind(1), *pairs], dim=1)


def linearised_rate(circuit: Circuit, P: Tensor) -> Tensor:
    """Spectral radius (B,) in 1/s of -(dq/dx)⁻¹·df/dx at the DC operating point, with the
    algebraic unknowns eliminated (Schur complement)."""
    bound = dae_of(circuit).bind(P)
    with torch.no_grad():
        x = operating_point(bound)
        _, _, jq, jf = bound.jacobians(x, 0.0)
    diff = jq.abs().amax(dim=(0, 1)) > 0
    d, a = torch.nonzero(diff).flatten(), torch.nonzero(~diff).flatten()
    A = jf[:, d][:, :, d]
    if len(a):
        A = A - jf[:, d][:, :, a] @ torch.linalg.solve(jf[:, a][:, :, a], jf[:, a][:, :, d])
    try:
        M = -torch.linalg.solve(jq[:, d][:, :, d], A)
    except RuntimeError:
        raise TimeScaleError(f"circuit {circuit.name}: the charge matrix of the differential unknowns is "
                             "singular, so time_scale=linearized has no time unit") from None
    return torch.linalg.eigvals(M).abs().amax(dim=1)


def fit_time_scale(circuit: Circuit, designs: int = FIT_DESIGNS) -> tuple[Tensor, float]:
    """Coefficients of log s(u) (quadratic in the unit design) and the fit's worst relative error."""
    space = circuit.space
    if space.dim == 0:
        raise TimeScaleError(f"circuit {circuit.name}: time_scale=linearized needs design parameters")
    if dae_of(circuit).bind(None).breakpoints():
        raise TimeScaleError(f"circuit {circuit.name}: time_scale=linearized is for autonomous circuits; "
                             "this one has time-dependent sources (PULSE/PWL corners)")
    P = torch.cat([space.nominal_vector().unsqueeze(0), space.sample_sobol(designs, seed=12_345)])
    log_rate = torch.log(linearised_rate(circuit, P))
    log_rate = log_rate - log_rate[0]
    feats = quadratic_features(space.to_unit(P))
    coef = torch.linalg.lstsq(feats, log_rate.unsqueeze(1)).solution.squeeze(1)
    coef[0] -= float(feats[0] @ coef)  # exactly 1 at nominal
    worst = float((feats @ coef - log_rate).abs().max().exp() - 1)
    return coef, worst


def largest_factor(coef: Tensor, dim: int, samples: int = 4096) -> float:
    """Largest s(u) over the unit design cube (Sobol points and all corners), for the time horizon."""
    u = torch.quasirandom.SobolEngine(dim, scramble=True, seed=0).draw(samples).to(torch.float64)
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * dim).reshape(-1, dim)
    u = torch.cat([u, corners])
    return float((quadratic_features(u) @ coef).exp().max())


def nominal_period(circuit: Circuit) -> float:
    """Period (s) of the nominal design's first output over [0, tstop], from one reference run: the
    time unit of a limit-cycle window (like the scales of the residual rows, from the same run)."""
    from circuits.measure import MeasureError, period
    from circuits.simulation import simulate_batch

    with torch.no_grad():
        grid = torch.linspace(0.0, circuit.tstop, 20_001, dtype=torch.float64)
        t, y = simulate_batch(circuit, None, t=grid, rtol=1e-6)
    try:
        return float(period(t, y[0, :, 0], k=2))
    except MeasureError:
        raise TimeScaleError(f"circuit {circuit.name}: {circuit.outputs[0]} does not oscillate in [0, tstop] "
                             "at the nominal design, so it has no period for periodic_from") from None
