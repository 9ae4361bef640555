"""DC operating point (Newton, then gmin stepping, then a Newton homotopy) and the transient's
initial condition; differentiable at the root by one Newton correction with the graph attached."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from circuits.dae import CURRENT_ATOL, BoundDAE
from circuits.errors import ConvergenceError
from circuits.limiting import Limiter

__all__ = ["operating_point", "initial_condition", "fixed_newton_tolerance"]

NEWTON_MAX_ITER = 40
DC_MAX_ITER = 100  # ngspice's itl1 (dcmaxiter)
DAMPED_MAX_ITER = 200
DAMPED_STEP = 1.0  # V (or A) per damped Newton iteration
GMIN_LADDER = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 0.0]


def _newton(system, x: Tensor, tol: Tensor, max_iter: int = NEWTON_MAX_ITER, step_limit: float = 1e3,
            limiter: Limiter | None = None) -> tuple[Tensor, bool, int]:
    """Solve system(x, limiter) -> (R, J) = 0 from x; converged when every |dx| <= tol (per
    unknown) in an iteration that limited no device (`circuits.limiting`).

    A design whose update exceeds step_limit (V or A) in some unknown is scaled to that size."""
    limiter = limiter or Limiter()
    for it in range(1, max_iter + 1):
        limiter.begin()
        R, J = system(x, limiter)
        if not torch.isfinite(R).all():
            return x, False, it
        try:
            dx = torch.linalg.solve(J, R.unsqueeze(-1)).squeeze(-1)
        except RuntimeError:  # singular Jacobian
            return x, False, it
        size = dx.abs().amax(dim=1, keepdim=True)
        x = x - dx / torch.where(size > step_limit, size / step_limit, torch.ones_like(size))
        if not torch.isfinite(x).all():
            return x, False, it
        if not limiter.active and bool((dx.abs() <= tol + 1e-9 * x.abs()).all()) and limiter.settle():
            return x, True, it
    return x, False, max_iter


def fixed_newton_tolerance(bound: BoundDAE, x: Tensor) -> Tensor:
    """Fixed per-unknown Newton tolerance (DC, fixed-step transients): 1 % of the unknowns' atol."""
    return (bound.dae.atol.to(x) * 1e-2).expand_as(x)


IC_CONDUCTANCE = 1e10  # S: ngspice's .ic stamp on a node row that also holds branch currents


def current_columns(bound: BoundDAE, n_nodes: int) -> Tensor:
    """(n,) bool: the unknowns that are branch currents (ngspice's SP_CURRENT columns)."""
    cols = bound.dae.atol == CURRENT_ATOL
    cols[:n_nodes] = False
    return cols


def held_rows(f: Tensor, jf: Tensor, y: Tensor, hold_values: Tensor, hold_mask: Tensor,
              current: Tensor) -> tuple[Tensor, Tensor]:
    """Residual f and Jacobian jf (B, n[, n]) with the held unknowns' rows as ngspice's .ic
    (cktload.c, ZeroNoncurRow): a node row with branch-current entries keeps them and gets
    1e10 (v - ic), so those currents stay determined (an inductor or source at the node); any
    other held row is v - ic."""
    jc = jf * current  # the rows' branch-current entries
    keeps = hold_mask & (jc != 0).any(dim=-1)   # (B, n)
    eye = torch.eye(f.shape[-1], dtype=f.dtype)
    R = torch.where(keeps, IC_CONDUCTANCE * (y - hold_values) + (jc @ y.unsqueeze(-1)).squeeze(-1),
                    y - hold_values)
    J = torch.where(keeps.unsqueeze(-1), IC_CONDUCTANCE * eye + jc, eye)
    return torch.where(hold_mask, R, f), torch.where(hold_mask.unsqueeze(-1), J, jf)


def operating_point(bound: BoundDAE, hold_values: Tensor | None = None, hold_mask: Tensor | None = None,
                    t: float = 0.0, x_guess: Tensor | None = None) -> Tensor:
    """DC solution f(x, t) = 0; unknowns in hold_mask are fixed to hold_values (.ic, initial states).

    Tries plain Newton, then gmin stepping, then a Newton homotopy from the initial guess.
    """
    B, n = bound.batch, bound.dae.size
    dtype = bound.designs.dtype
    x = torch.zeros(B, n, dtype=dtype) if x_guess is None else x_guess.detach().clone()
    if hold_mask is None:
        hold_mask = torch.zeros(n, dtype=torch.bool)
        hold_values = torch.zeros(B, n, dtype=dtype)
    hold_values = hold_values.detach()
    x = torch.where(hold_mask, hold_values, x)
    n_nodes = len(bound.dae.node_names)
    node_mask = torch.zeros(n, dtype=torch.bool)
    node_mask[:n_nodes] = True
    current = current_columns(bound, n_nodes)
    tol = fixed_newton_tolerance(bound, x)

    def system(gmin: float, lam: float = 1.0, f0: Tensor | None = None):
        def fn(y: Tensor, limiter: Limiter | None = None):
            _, f, _, jf = bound.jacobians(y, t, limiter=limiter)
            f = f + gmin * torch.where(node_mask, y, torch.zeros_like(y))
            jf = jf + gmin * torch.diag(node_mask.to(dtype))
            if f0 is not None:
                f = f - (1 - lam) * f0
            return held_rows(f, jf, y, hold_values, hold_mask, current)
        return fn

    def with_sensitivity(sol: Tensor) -> Tensor:
        """One Newton correction with the graph: exact dx/dp at the root (implicit-function theorem)."""
        if not (torch.is_grad_enabled() and bound.designs.requires_grad):
            return sol
        _, J = system(0.0)(sol)
        _, f = bound.evaluate(sol, t)  # jacobians() carry no graph; evaluate() does
        R = torch.where(hold_mask, torch.zeros_like(f), f)
        return sol - torch.linalg.solve(J.detach(), R.unsqueeze(-1)).squeeze(-1)

    with torch.no_grad():
        # ngspice's first try: Newton with junction limiting from the devices' starting voltages
        sol, ok, _ = _newton(system(0.0), x, tol, DC_MAX_ITER, math.inf, Limiter(start=True))
        if not ok:  # a damped Newton: no unknown moves more than 1 V per iteration
            sol, ok, _ = _newton(system(0.0), x, tol, DAMPED_MAX_ITER, DAMPED_STEP, Limiter(start=True))
        if not ok:
            y = x
            for gmin in GMIN_LADDER:
                y, ok, _ = _newton(system(gmin), y, tol, limiter=Limiter(start=y is x))
                if not ok:
                    break
            sol = y
        if not ok:
            _, f0 = bound.evaluate(x, t)
            y = x
            for lam in torch.linspace(0.05, 1.0, 20).tolist():
                y, ok, _ = _newton(system(0.0, lam, f0), y, tol)
                if not ok:
                    break
            sol = y
    if ok:
        return with_sensitivity(sol)
    nonfinite = bound.nonfinite(x, t)
    if nonfinite:
        raise ConvergenceError(f"DC operating point: {nonfinite}")
    raise ConvergenceError("DC operating point did not converge (tried Newton, gmin stepping and "
                           "homotopy); check for floating nodes or impossible sources")


def initial_condition(bound: BoundDAE, uic: bool,
                      first_try: Callable[[Tensor, Tensor], Tensor | None] | None = None) -> Tensor:
    """x(0): `.ic` values with zeros elsewhere if uic (as ngspice), else the DC operating point
    with `.ic` nodes and device initial states held (released at t = 0+).

    first_try(hold_values, hold_mask): a cheaper DC solver tried first (None when it fails)."""
    ic_vals, ic_mask = bound.ic_values()
    st_vals, st_mask = bound.initial_states(ic_vals)
    values = torch.where(st_mask, st_vals, ic_vals)
    mask = ic_mask | st_mask
    if uic:
        return values.detach()
    if first_try is not None:
        x = first_try(values.detach(), mask)
        if x is not None:
            return x
    return operating_point(bound, values, mask)
