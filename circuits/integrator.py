"""The one integrator both step policies use: the method (trapezoidal / variable-step BDF2
coefficients and local-truncation-error factor), the predictor and third-derivative weights, and
the step controller.  Every function takes Python floats (shared steps, one design) or (B,) tensors
(per-design steps) alike; the step loops in `circuits.solve` and `circuits.solve_per_design` only
decide which designs share a step.

History convention: the derivative of the charges at the new point is
``qdot_{n+1} = a q_{n+1} + b`` with ``b = c0 q_n + c1 q_{n-1} - k qdot_n``; Newton solves
``a q(x) + b + f(x, t) = 0``.  After a breakpoint the first step is backward Euler, at the start
the first two (`second_order`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Coefficients", "Method", "method_of", "StepController", "CONTROLLER", "step_weights",
           "second_order", "predictor_degree", "checked_unknowns", "step_ceiling", "error_left_per_update",
           "NEWTON_LTE_FRACTION", "CHORD_MAX_CONTRACTION"]

NEWTON_LTE_FRACTION = 0.5  # transient Newton tolerance as a fraction of the LTE tolerance
CHORD_MAX_CONTRACTION = 0.7  # refresh the reused Jacobian when an iteration shrinks the update less

Scalar = Any  # a Python float or a (B,) tensor


def _where(cond, x, y):
    """torch.where for tensors, a conditional for Python booleans."""
    if isinstance(cond, Tensor):
        return torch.where(cond, x, y)
    return x if cond else y


def _clamp(x, lo: float | None = None, hi: float | None = None):
    if isinstance(x, Tensor):
        return x.clamp(min=lo, max=hi)
    if lo is not None:
        x = max(x, lo)
    return x if hi is None else min(x, hi)


def _col(c):
    """A (B,) coefficient as a (B, 1) column against (B, n) states; floats pass through."""
    return c[:, None] if isinstance(c, Tensor) and c.dim() == 1 else c


@dataclass(slots=True)
class Coefficients:
    """qdot_{n+1} = a q_{n+1} + c0 q_n + c1 q_{n-1} - k qdot_n (c1, k: the float 0.0 when unused)."""

    a: Scalar
    c0: Scalar
    c1: Scalar
    k: Scalar


def second_order(npts: Scalar, total: Scalar) -> Scalar:
    """Whether a step is second order, from the points since the last reset (npts) and since the
    start (total): after one backward-Euler step since a source corner, after two since the start.

    The start point may lie off the trajectory that follows (an .ic or uic start: the first step can
    span a fast transient), so the first step's chord is no slope for the trapezoidal rule's history;
    a second Euler step damps what it left in stiff modes, as ngspice's order-1 steps after its first
    time point do.
    """
    return (npts >= 2) & (total >= 3)


def predictor_degree(npts: Scalar, total: Scalar) -> Scalar:
    """Degree of Newton's initial guess, extrapolated from the last points: 0 (the last point) on the
    first step after a reset and the second after the start, 1 on the third and the second after a
    reset, else 2.  It never extrapolates from the start point across the first step (see
    `second_order`), nor across a source corner: a quadratic through a point before the corner
    can put a source-driven node volts away (a bistable circuit's Newton then lands in the other
    state)."""
    if isinstance(total, Tensor):
        return torch.where((npts < 2) | (total < 3), 0, torch.where((total < 4) | (npts < 3), 1, 2))
    return 0 if npts < 2 or total < 3 else (1 if total < 4 or npts < 3 else 2)


def checked_unknowns(in_charge, n_nodes: int):
    """1 for the unknowns the LTE check covers: those in some charge (a numpy or torch (n,) mask) and
    every node voltage.

    A node without charge has no truncation error of its own, but between steps it is interpolated
    (quadratically: an error of order h^3 |x'''|, like the LTE); unchecked, a charge-free node that
    follows its input nonlinearly (a CMOS inverter without capacitances) is sampled only as finely
    as the step doubling after a source corner happens to.
    """
    mask = in_charge.clone() if isinstance(in_charge, Tensor) else in_charge.copy()
    mask[:n_nodes] = 1
    return mask


@dataclass(frozen=True)
class Method:
    """An integration method: its coefficients and its local-truncation-error factor."""

    name: str  # "trap" or "bdf2"

    @property
    def uses_previous_step(self) -> bool:
        """Whether the coefficients depend on the previous step too (variable-step BDF2)."""
        return self.name == "bdf2"

    def coefficients(self, h: Scalar, h_prev: Scalar, second: bool | Tensor) -> Coefficients:
        """Coefficients of a step h after a step h_prev; second: second order (else backward Euler)."""
        if self.name == "trap":
            if not isinstance(second, Tensor):
                return Coefficients(2.0 / h, -2.0 / h, 0.0, 1.0) if second else Coefficients(1.0 / h, -1.0 / h, 0.0, 0.0)
            k = second.to(h.dtype)
            a = (1 + k) / h
            return Coefficients(a, -a, 0.0, k)
        if not isinstance(second, Tensor) and not second:
            return Coefficients(1.0 / h, -1.0 / h, 0.0, 0.0)
        w = h / h_prev
        a2, c02, c12 = (1 + 2 * w) / ((1 + w) * h), -(1 + w) / h, w * w / ((1 + w) * h)
        if not isinstance(second, Tensor):
            return Coefficients(a2, c02, c12, 0.0)
        return Coefficients(torch.where(second, a2, 1.0 / h), torch.where(second, c02, -1.0 / h),
                            torch.where(second, c12, torch.zeros_like(h)), 0.0)

    @staticmethod
    def history(co: Coefficients, q1, q0, qdot):
        """b = c0 q_n + c1 q_{n-1} - k qdot_n from the last charges and charge derivative."""
        c0, c1, k = co.c0, co.c1, co.k
        if isinstance(c0, Tensor):
            c0, c1, k = _col(c0), _col(c1), _col(k)
        b = c0 * q1
        if not (isinstance(c1, float) and c1 == 0.0):
            b = b + c1 * q0
        if not (isinstance(k, float) and k == 0.0):
            b = b - k * qdot
        return b

    @staticmethod
    def derivative(co: Coefficients, q_new, b):
        """dq/dt at the new point, as the method defines it (SPICE's trapezoidal history)."""
        return _col(co.a) * q_new + b

    def lte_factor(self, h: Scalar, h_prev: Scalar) -> Scalar:
        """Local truncation error per unit third derivative of a second-order step."""
        if self.name == "trap":
            return h ** 3 / 12.0
        w = h / h_prev
        return h ** 3 * (1 + w) ** 2 / (6.0 * (1 + 2 * w))


_METHODS = {"trap": Method("trap"), "bdf2": Method("bdf2")}


def method_of(name: str) -> Method:
    """The Method called name ('trap' or 'bdf2')."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown integration method {name!r} (trap or bdf2)") from None


def step_weights(t0: Scalar, t1: Scalar, t2: Scalar, t_new: Scalar) -> tuple[list, list]:
    """Weights on the last 3 accepted points for the quadratic predictor at t_new, and on those
    points and the new one for the third derivative (6 x their third divided difference).

    With P_i = prod_{j != i} (t_i - t_j) over the 4 times, the divided difference is sum_i x_i / P_i
    and the predictor's Lagrange weights are -P_3 / P_i (i < 3).
    """
    d01, d02, d03 = t0 - t1, t0 - t2, t0 - t_new
    d12, d13, d23 = t1 - t2, t1 - t_new, t2 - t_new
    P = [d01 * d02 * d03, -d01 * d12 * d13, d02 * d12 * d23, -d03 * d13 * d23]
    return [-P[3] / p for p in P[:3]], [6.0 / p for p in P]


@dataclass(frozen=True)
class StepController:
    """How the step grows and shrinks: error-per-step control on the third-derivative LTE estimate."""

    safety: float = 0.9
    grow_max: float = 2.0        # at most doubling per accepted step
    shrink_min: float = 0.3      # an accepted step's successor is at least 0.3 x
    reject_min: float = 0.2      # an LTE rejection retries with at least 0.2 x
    newton_cut: float = 0.125    # a Newton failure retries with 1/8 of the step
    first_fraction: float = 0.01  # the first step: 1 % of min(tstep, tstop/50)
    restart_fraction: float = 0.1  # after a breakpoint: at most 10 % of the way to the next one

    def first_step(self, tstep: float, tstop: float) -> float:
        """The first step of a run."""
        return min(tstep, tstop / 50) * self.first_fraction

    @staticmethod
    def min_step(tstop: float) -> float:
        """Below this a Newton failure is fatal and the LTE no longer rejects."""
        return tstop * 1e-14

    def gain(self, ratio: Scalar) -> Scalar:
        """Step factor that would bring the LTE ratio (error / tolerance) to the safety level."""
        if isinstance(ratio, float):
            return self.safety * max(ratio, 1e-12) ** (-1 / 3)
        return self.safety * ratio.clamp(min=1e-12) ** (-1 / 3)

    def rejects(self, ratio: Scalar, h: Scalar, hmin: float):
        """Whether the LTE ratio rejects a (Newton-converged) step."""
        return (ratio > 1.0) & (h > hmin * 10) if isinstance(ratio, Tensor) else (ratio > 1.0 and h > hmin * 10)

    def after_accept(self, h: Scalar, gain: Scalar, checked) -> Scalar:
        """Next step after an accepted one; unchecked (too few points for an LTE estimate): double."""
        if checked is True:
            return min(max(gain, self.shrink_min), self.grow_max) * h
        return _where(checked, _clamp(gain, self.shrink_min, self.grow_max), self.grow_max) * h

    def after_rejection(self, h: Scalar, gain: Scalar) -> Scalar:
        """Retry step after an LTE rejection."""
        return h * _clamp(gain, lo=self.reject_min)

    def after_newton_failure(self, h: Scalar) -> Scalar:
        """Retry step after Newton failed to converge."""
        return h * self.newton_cut

    def after_breakpoint(self, h_next: Scalar, t: Scalar, following: Scalar, tstep: float) -> Scalar:
        """First step after a source corner (the method restarts at first order)."""
        if isinstance(h_next, Tensor):
            return torch.minimum(h_next, self.restart_fraction * (following - t)).clamp(max=tstep)
        return min(h_next, self.restart_fraction * (following - t), tstep)

    @staticmethod
    def newton_tolerance(atol, rtol, abs_x_last):
        """Per-unknown Newton tolerance from |x| at the last point: well below the step's
        local-error tolerance."""
        return NEWTON_LTE_FRACTION * (atol + rtol * abs_x_last)


CONTROLLER = StepController()


def error_left_per_update(theta: Scalar) -> Scalar:
    """Newton's error left after an update, per unit of the update, from the measured contraction
    rate θ = |dx_k| / |dx_k-1|: θ/(1-θ) for θ < 1/2, else 1 (no credit for the contraction)."""
    r = _clamp(theta, hi=0.5)
    return r / (1 - r)


def step_ceiling(bound, tstop: float, hmax: float | None) -> float:
    """The largest step either integrator takes: hmax if given, else the circuit's `max_step`
    (ngspice's rule for raw netlists), never above tstop/50 of this run."""
    if hmax:
        return hmax
    return min(bound.dae.circuit.max_step or tstop / 50, tstop / 50)
