"""Time rates of an oscillator's windows by variable projection.

For a fixed waveform shape the scaled residual is affine in the speed at which time runs through
it: r = λ·A + b, with A the residual of the shape's own rate alone and b the residual at rest.
At each point of the shape, λ_i = −⟨A_i, b_i⟩ / ⟨A_i, A_i⟩ is the speed at which the circuit
equations move the state along it.  Time adds up point by point, so a window (or one cycle) of the
shape takes as long as the equations need when time runs through it at the harmonic mean of these
speeds, 1 / mean(1/λ_i), with the points equally spaced in the shape's own time.

On ring5 the residual-trained shapes were right but ran at the wrong speed: the limit cycle's
frequency (a small MLP trained jointly) up to 0.45 % off, and every start-up window 0.3–1.1 % slow
or fast, so the phase at the cycle's start was up to 22 ps off.  After L-BFGS, each window's rate
head (a Legendre polynomial in the design, linear in its weights) is therefore refitted to these
speeds by least squares.  No waveform data: the speeds come from the circuit equations on the
learned shapes.  The single least-squares speed of a whole window, −Σ⟨A, b⟩ / Σ⟨A, A⟩, weights the
points by |A_i|² (the fast edges) and is not the time the shape takes: with it ring5's worst
held-out design started its cycle 6 ps late, with the harmonic mean 3 ps (docs/surrogate_ablation.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from surrogate.models import LimitCycleSurrogate, Surrogate
from surrogate.nets import LegendreHead

__all__ = ["fit_log_head", "orbit_rates", "window_rate_factors"]


#: a point speed further than this factor from its design's least-squares speed (a nearly still
#: point of the shape, ⟨A, A⟩ ≈ 0) is clamped to this factor; ring5's stayed within 0.95..1.04 of it
POINT_SPEED_RANGE = 4.0


def _traversal_speeds(model: Surrogate, bound, x: Tensor, rate: Tensor, t: Tensor, points: int) -> Tensor:
    """Per design (D,): the factor λ on the learned unknowns' rate under which the circuit equations
    traverse that design's `points` rows of x, rate (N = D·points, equally spaced in the shape's
    own time) in the time they take: the harmonic mean of the point speeds λ_i.  A design whose
    least-squares speed is not positive (a collapsed shape) gets that speed, for the caller to reject."""
    phys = model.physics
    zero = torch.zeros_like(x)
    at_rest = phys.residual(bound, x, zero, t)
    per_rate = phys.residual(bound, x, zero.index_copy(1, model.learned_idx, rate), t) - at_rest
    D = x.shape[0] // points
    num = -(per_rate * at_rest).sum(dim=1).view(D, points)
    den = (per_rate * per_rate).sum(dim=1).view(D, points)
    least_squares = (num.sum(dim=1) / den.sum(dim=1)).unsqueeze(1)
    point = num / den.clamp(min=torch.finfo(den.dtype).tiny)
    point = torch.clamp(point, min=least_squares / POINT_SPEED_RANGE, max=least_squares * POINT_SPEED_RANGE)
    harmonic = 1.0 / (1.0 / point).mean(dim=1)
    return torch.where(least_squares.squeeze(1) > 0, harmonic, least_squares.squeeze(1))


def orbit_rates(model: LimitCycleSurrogate, P: Tensor, starts: Tensor, points: int = 128,
                decay: float = 1.0) -> Tensor:
    """Cycle rate dc/dt (D,) in cycles per second at which the circuit equations traverse each
    design's learned orbit (`_traversal_speeds`).

    P (D, P) designs, starts (D, n) their states at the start of the cycle window; the orbit is
    sampled at `points` equally spaced cycle fractions (uniform in c is uniform in time)."""
    dtype = next(model.cycle_net.parameters()).dtype
    cycles = ((torch.arange(points, dtype=torch.float64) + 0.5) / points).repeat(P.shape[0]).unsqueeze(1)
    PP = P.repeat_interleave(points, dim=0)
    u = model.circuit.space.to_unit(PP).to(dtype)
    t = torch.full((PP.shape[0],), model.circuit.tstop, dtype=torch.float64)  # autonomous: any time will do
    with torch.no_grad():
        learned, dx_dc = model.cycle_values(cycles.to(dtype), u, starts.repeat_interleave(points, dim=0),
                                            with_rate=True, decay=decay)
        bound = model.physics.bind(PP)
        x = model.physics.pinned_values(bound, t).index_copy(1, model.learned_idx, learned)
        return _traversal_speeds(model, bound, x, dx_dc, t, points)


def window_rate_factors(model: Surrogate, window: int, P: Tensor, starts: Tensor, points: int = 128) -> Tensor:
    """Factor (D,) by which each design's time should run faster through a (non-cycle) window for
    its shape to take as long as the circuit equations need (`_traversal_speeds`): 1 when it does."""
    t0, t1 = float(model.edges[window]), float(model.edges[window + 1])
    w = (t0 + (t1 - t0) * (torch.arange(points, dtype=torch.float64) + 0.5) / points).repeat(P.shape[0])
    PP = P.repeat_interleave(points, dim=0)
    with torch.no_grad():
        t = model.unwarp(w, PP, window)
        x, xdot, bound = model.state(t, PP, with_rate=True, starts=starts.repeat_interleave(points, dim=0),
                                     window=window)
        return _traversal_speeds(model, bound, x, xdot[:, model.learned_idx], t, points)


def fit_log_head(head: LegendreHead, u: Tensor, target: Tensor) -> float:
    """Set a Legendre head to the least-squares fit of `target` (D,) at unit designs u (D, P);
    returns the worst relative gap exp|fit − target| − 1 left on them."""
    if not bool(torch.isfinite(target).all()):
        raise ValueError("rate targets must be finite (a collapsed window has no rate)")
    dtype = head.linear.weight.dtype
    with torch.no_grad():
        u = u.to(torch.float64)
        feats = torch.cat([torch.ones(len(u), 1, dtype=torch.float64), head.to(torch.float64).features(u)], dim=1)
        coef = torch.linalg.lstsq(feats, target.unsqueeze(1)).solution
        head.linear.bias.copy_(coef[0])
        head.linear.weight.copy_(coef[1:].T)
        worst = float((feats @ coef - target.unsqueeze(1)).abs().max())
    head.to(dtype)
    return math.expm1(worst)
