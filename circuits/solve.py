"""Reference solver: DC operating point and batched, differentiable transient analysis (float64).

Transient: trapezoidal or variable-step BDF2 with Newton at every step, local-truncation-error step
control and breakpoints at source corners.  steps="shared": one step sequence for the whole batch of
designs (the step is chosen for the worst design), so B designs cost one vectorised Newton per step.
steps="per_design" (no-grad): every design has its own time, step, order and history; all designs
still advance together in one vectorised chord Newton per iteration, each accepting/rejecting its
own step (masks); finished designs are dropped from the working batch (re-bound) as they reach tstop.
Differentiability: Newton runs without a graph; each converged step is then re-expressed as one
Newton correction ``x* - J⁻¹ R(x*, history, p)`` with the graph attached, which gives the exact
first-order sensitivity (implicit-function theorem) at the cost of one extra evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from circuits.dae import BoundDAE
from circuits.errors import ConvergenceError

__all__ = ["TransientResult", "operating_point", "initial_condition", "transient", "interpolate"]

NEWTON_MAX_ITER = 40
NEWTON_LTE_FRACTION = 0.1  # transient Newton tolerance as a fraction of the LTE tolerance
CHORD_MAX_CONTRACTION = 0.7  # refresh the reused Jacobian when an iteration shrinks the update less
DEFAULT_BATCH_STEPS = "per_design"  # default steps mode of no-grad adaptive batches (B > 1)
GMIN_LADDER = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 0.0]


@dataclass
class TransientResult:
    """Time points, solution, unknown names and solver statistics.

    Shared steps: t (T,), x (B, T, n), counts None.  Per-design steps: t (B, T_max) and
    x (B, T_max, n), design b's own grid being t[b, :counts[b]]; the rest repeats its last point.
    """

    t: Tensor
    x: Tensor
    names: list[str]
    stats: dict = field(default_factory=dict)
    breakpoints: list[float] = field(default_factory=list)
    counts: Tensor | None = None
    steps_mode: str = "shared"


def _newton(system, x: Tensor, tol: Tensor, max_iter: int = NEWTON_MAX_ITER) -> tuple[Tensor, bool, int]:
    """Solve system(x) -> (R, J) = 0 from x; converged when every |dx| <= tol (per unknown)."""
    for it in range(1, max_iter + 1):
        R, J = system(x)
        if not torch.isfinite(R).all():
            return x, False, it
        try:
            dx = torch.linalg.solve(J, R.unsqueeze(-1)).squeeze(-1)
        except RuntimeError:  # singular Jacobian
            return x, False, it
        # damp huge updates (no device limiting): at most 1 V-equivalent per iteration
        scale = torch.clamp(dx.abs().amax(dim=1, keepdim=True) / 1.0, min=1.0)
        x = x - dx / torch.where(scale > 1e3, scale, torch.ones_like(scale))
        if not torch.isfinite(x).all():
            return x, False, it
        if bool((dx.abs() <= tol + 1e-9 * x.abs()).all()):
            return x, True, it
    return x, False, max_iter


def _chord_newton(bound: BoundDAE, x: Tensor, t: float, a: float, b: Tensor, tol: Tensor,
                  jac: tuple[Tensor, Tensor] | None, max_iter: int = 25):
    """Solve a q(x) + b + f(x, t) = 0 by Newton with a reused Jacobian (refreshed when slow).

    Returns (x, converged, iterations, jacobian-to-reuse).  Re-using dq/dx and df/dx across
    iterations and steps costs one plain evaluation per iteration instead of n+1.
    """
    if jac is None:
        _, _, jq, jf = bound.jacobians(x, t)
        jac = (jq, jf)
    lu = torch.linalg.lu_factor(a * jac[0] + jac[1])
    prev = None
    for it in range(1, max_iter + 1):
        q, f = bound.evaluate(x, t)
        R = a * q + b + f
        dx = torch.linalg.lu_solve(lu[0], lu[1], R.unsqueeze(-1)).squeeze(-1)
        if not torch.isfinite(dx).all():
            return x, False, it, None
        x = x - dx
        size = float((dx.abs() / (tol + 1e-8 * x.abs())).max())
        if size <= 1.0:
            return x, True, it, jac
        slow = prev is not None and size > CHORD_MAX_CONTRACTION * prev
        if slow or it % 10 == 0:  # stale Jacobian: refresh at the current iterate
            _, _, jq, jf = bound.jacobians(x, t)
            jac = (jq, jf)
            try:
                lu = torch.linalg.lu_factor(a * jq + jf)
            except RuntimeError:
                return x, False, it, None
            prev = None
            continue
        prev = size
    return x, False, max_iter, None


def _newton_tol(bound: BoundDAE, x: Tensor) -> Tensor:
    return (bound.dae.atol.to(x) * 1e-2).expand_as(x)


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
    eye = torch.eye(n, dtype=dtype)
    tol = _newton_tol(bound, x)

    def system(gmin: float, lam: float = 1.0, f0: Tensor | None = None):
        def fn(y: Tensor):
            _, f, _, jf = bound.jacobians(y, t)
            f = f + gmin * torch.where(node_mask, y, torch.zeros_like(y))
            jf = jf + gmin * torch.diag(node_mask.to(dtype))
            if f0 is not None:
                f = f - (1 - lam) * f0
            R = torch.where(hold_mask, y - hold_values, f)
            J = torch.where(hold_mask.unsqueeze(-1), eye, jf)
            return R, J
        return fn

    with torch.no_grad():
        sol, ok, _ = _newton(system(0.0), x, tol)
        if ok:
            return sol
        y = x
        for gmin in GMIN_LADDER:
            y, ok, _ = _newton(system(gmin), y, tol)
            if not ok:
                break
        if ok:
            return y
        _, f0 = bound.evaluate(x, t)
        y = x
        for lam in torch.linspace(0.05, 1.0, 20).tolist():
            y, ok, _ = _newton(system(0.0, lam, f0), y, tol)
            if not ok:
                break
        if ok:
            return y
    raise ConvergenceError("DC operating point did not converge (tried Newton, gmin stepping and "
                           "homotopy); check for floating nodes or impossible sources")


def initial_condition(bound: BoundDAE, uic: bool) -> Tensor:
    """x(0): `.ic` values with zeros elsewhere if uic (as ngspice), else the DC operating point
    with `.ic` nodes and device initial states held (released at t = 0+)."""
    ic_vals, ic_mask = bound.ic_values()
    st_vals, st_mask = bound.initial_states(ic_vals)
    values = torch.where(st_mask, st_vals, ic_vals)
    mask = ic_mask | st_mask
    if uic:
        return values.detach()
    return operating_point(bound, values, mask)


def _coefficients(method: str, order: int, h: float, h_prev: float | None):
    """Return (a, c0, c1): qdot_{n+1} = a q_{n+1} + c0 q_n + c1 q_{n-1} (+ trap's -qdot_n)."""
    if order == 1:
        return 1.0 / h, -1.0 / h, 0.0
    if method == "trap":
        return 2.0 / h, -2.0 / h, 0.0
    w = h / h_prev
    return (1 + 2 * w) / ((1 + w) * h), -(1 + w) / h, w * w / ((1 + w) * h)


def _lte_factor(method: str, h: float, h_prev: float) -> float:
    if method == "trap":
        return h ** 3 / 12.0
    w = h / h_prev
    return h ** 3 * (1 + w) ** 2 / (6.0 * (1 + 2 * w))


def _third_derivative(ts: list[float], xs: list[Tensor]) -> Tensor:
    """x''' estimated from the third divided difference of the last four points."""
    t0, t1, t2, t3 = ts[-4:]
    x0, x1, x2, x3 = xs[-4:]
    d10, d11, d12 = (x1 - x0) / (t1 - t0), (x2 - x1) / (t2 - t1), (x3 - x2) / (t3 - t2)
    d20, d21 = (d11 - d10) / (t2 - t0), (d12 - d11) / (t3 - t1)
    return 6.0 * (d21 - d20) / (t3 - t0)


def transient(bound: BoundDAE, tstop: float, *, method: str = "trap", rtol: float = 1e-5,
              atol_scale: float = 1.0, dt: float | None = None, hmax: float | None = None,
              uic: bool = False, x0: Tensor | None = None, progress: bool = False,
              steps: str | None = None) -> TransientResult:
    """Integrate the bound DAE from 0 to tstop for all designs at once.

    dt: fixed step (no error control, no breakpoint clipping) for convergence studies; otherwise
    LTE control with tolerance atol·atol_scale + rtol·|x| per unknown.
    steps: "shared" (one step sequence for the batch, chosen for the worst design; differentiable)
    or "per_design" (every design has its own time and step, all advance in one vectorised Newton;
    no gradients; result t is (B, T_max), see `TransientResult`).  Default: "per_design" for
    adaptive no-grad runs with B > 1, else "shared".
    """
    if method not in ("trap", "bdf2"):
        raise ValueError(f"unknown integration method {method!r} (trap or bdf2)")
    needs_grad = torch.is_grad_enabled() and bound.designs.requires_grad
    if steps is None:
        steps = DEFAULT_BATCH_STEPS if (not needs_grad and dt is None and bound.batch > 1) else "shared"
    if steps == "per_design":
        if needs_grad:
            raise ValueError("steps='per_design' is no-grad only: use steps='shared' for gradients "
                             "(or run under torch.no_grad() / detach the designs)")
        if dt is not None:
            raise ValueError("fixed dt needs steps='shared'")
        return _transient_per_design(bound, tstop, method=method, rtol=rtol, atol_scale=atol_scale,
                                     hmax=hmax, uic=uic, x0=x0, progress=progress)
    if steps != "shared":
        raise ValueError(f"unknown steps mode {steps!r} (shared or per_design)")
    dae = bound.dae
    x = initial_condition(bound, uic) if x0 is None else x0
    dtype = x.dtype
    atol = dae.atol.to(dtype) * atol_scale
    tol = _newton_tol(bound, x)
    breakpoints = [] if dt is not None else [b for b in bound.breakpoints() if 0 < b < tstop]
    stops = breakpoints + [tstop]
    hmax = hmax or tstop / 50
    h = dt if dt is not None else min(dae.circuit.tstep, tstop / 50) * 0.01
    hmin = tstop * 1e-14

    with torch.no_grad():
        q_n, f_n = bound.evaluate(x, 0.0)
        _, _, jq0, _ = bound.jacobians(x, 0.0)
    differential = (jq0.abs().amax(dim=(0, 1)) > 0)  # unknowns that appear in some charge

    x_g = x
    if needs_grad:
        q_g, f_g = bound.evaluate(x_g, 0.0)
    else:
        q_g, f_g = q_n, f_n
    ts, xs_det, xs_out = [0.0], [x.detach()], [x_g]
    hist_q = [q_g]            # q at the points since the last reset (graph-carrying when needed)
    hist_t = [0.0]
    qdot_g = -f_g             # d q/dt at the last point (trap's history term)
    order_pts = 1             # points since the last reset (start or breakpoint)
    t = 0.0
    stats = {"steps": 0, "rejected": 0, "newton_iterations": 0}
    next_stop = 0
    jac = None  # (dq/dx, df/dx) reused across Newton iterations and steps while it still converges
    bar = _progress(progress, tstop)
    while t < tstop * (1 - 1e-12):
        while stops[next_stop] <= t * (1 + 1e-12) + 1e-30:
            next_stop += 1
        target = stops[next_stop]
        h = min(h, hmax)
        hit_stop = t + h >= target - 1e-9 * h if dt is None else False
        if hit_stop:
            h = target - t
        order = 1 if order_pts < 2 else 2
        h_prev = hist_t[-1] - hist_t[-2] if len(hist_t) >= 2 else None
        a, c0, c1 = _coefficients(method, order, h, h_prev)
        t_new = t + h
        with torch.no_grad():
            q_d, qdot_d = hist_q[-1].detach(), qdot_g.detach()
            b = c0 * q_d + (c1 * hist_q[-2].detach() if c1 else 0.0)
            if method == "trap" and order == 2:
                b = b - qdot_d
            guess = _predict(ts, xs_det, t_new) if order_pts >= 2 else xs_det[-1]
            # Newton error kept well below the local-error tolerance of the step (fixed steps: tight)
            step_tol = tol if dt is not None else NEWTON_LTE_FRACTION * (atol + rtol * xs_det[-1].abs())
            x_new, ok, iters, jac = _chord_newton(bound, guess, t_new, a, b, step_tol, jac)
        stats["newton_iterations"] += iters
        if not ok:
            stats["rejected"] += 1
            h = h / 8
            if h < hmin:
                raise ConvergenceError(f"transient: time step too small at t={t:.6g} s (Newton failed)")
            continue
        if dt is None and order_pts >= 3:
            x3 = _third_derivative(hist_t[-3:] + [t_new], xs_det[-3:] + [x_new])
            err = _lte_factor(method, h, h_prev) * x3.abs()
            scale = atol + rtol * torch.maximum(x_new.abs(), xs_det[-1].abs())
            ratio = float(torch.where(differential, err / scale, torch.zeros_like(err)).max())
            if ratio > 1.0 and h > hmin * 10:
                stats["rejected"] += 1
                h = h * max(0.2, 0.9 * ratio ** (-1 / 3))
                continue
            h_next = h * min(2.0, max(0.3, 0.9 * max(ratio, 1e-12) ** (-1 / 3)))
        else:
            h_next = h if dt is not None else h * 2.0
        # accept
        if needs_grad:
            x_step, q_step, f_step = _graph_step(bound, x_new, t_new, a, c0, c1, hist_q, qdot_g,
                                                 method, order)
        else:
            with torch.no_grad():
                q_step, f_step = bound.evaluate(x_new, t_new)
            x_step = x_new
        t = t_new
        ts.append(t)
        xs_det.append(x_new)
        xs_out.append(x_step)
        hist_q.append(q_step)
        hist_t.append(t)
        qdot_g = -f_step
        order_pts += 1
        stats["steps"] += 1
        bar.update(h)
        h = h_next
        if hit_stop and target < tstop:  # a source corner: restart at first order with a small step
            order_pts = 1
            hist_q, hist_t = [hist_q[-1]], [t]
            following = stops[next_stop + 1] if next_stop + 1 < len(stops) else tstop
            h = min(h, 0.1 * (following - t), dae.circuit.tstep)
    bar.close()
    return TransientResult(torch.tensor(ts, dtype=dtype), torch.stack(xs_out, dim=1), dae.names, stats,
                           breakpoints)


def _graph_step(bound: BoundDAE, x_new: Tensor, t_new: float, a, c0, c1, hist_q, qdot_g, method, order):
    """Re-attach the autograd graph to a converged step: one Newton correction with the graph."""
    q, f = bound.evaluate(x_new.detach(), t_new)
    _, _, jq, jf = bound.jacobians(x_new.detach(), t_new)
    b = c0 * hist_q[-1] + (c1 * hist_q[-2] if c1 else 0.0)
    if method == "trap" and order == 2:
        b = b - qdot_g
    R = a * q + b + f
    J = (a * jq + jf).detach()
    dx = torch.linalg.solve(J, R.unsqueeze(-1)).squeeze(-1)
    x_g = x_new.detach() - dx
    q_g = q - (jq.detach() @ dx.unsqueeze(-1)).squeeze(-1)
    f_g = f - (jf.detach() @ dx.unsqueeze(-1)).squeeze(-1)
    return x_g, q_g, f_g


def _predict(ts: list[float], xs: list[Tensor], t_new: float) -> Tensor:
    """Quadratic (or, with two points, linear) extrapolation: Newton's initial guess."""
    if len(ts) < 3:
        t0, t1 = ts[-2], ts[-1]
        return xs[-1] + (xs[-1] - xs[-2]) * ((t_new - t1) / (t1 - t0))
    t0, t1, t2 = ts[-3:]
    x0, x1, x2 = xs[-3:]
    s = t_new
    return (x0 * ((s - t1) * (s - t2) / ((t0 - t1) * (t0 - t2)))
            + x1 * ((s - t0) * (s - t2) / ((t1 - t0) * (t1 - t2)))
            + x2 * ((s - t0) * (s - t1) / ((t2 - t0) * (t2 - t1))))


def interpolate(t: Tensor, x: Tensor, t_eval: Tensor, breakpoints: list[float] | None = None,
                counts: Tensor | None = None) -> Tensor:
    """Interpolate x (B, T, n) sampled at t (T,) onto t_eval: quadratic (3-point Lagrange) within
    smooth stretches, never across a breakpoint (there the slope jumps), linear where no 3-point
    stencil fits.  Per-design grids: t (B, T) with design b's points t[b, :counts[b]] (padded
    after), t_eval (E,) or (B, E); returns (B, E, n) either way."""
    if t.dim() == 2:
        return _interpolate_per_design(t, x, t_eval, counts, breakpoints)
    t = t.to(x.dtype)
    t_eval = t_eval.to(x.dtype)
    T = t.shape[0]
    j = torch.clamp(torch.searchsorted(t, t_eval), 1, T - 1)  # t_eval lies in [t[j-1], t[j]]
    w = ((t_eval - t[j - 1]) / (t[j] - t[j - 1])).view(1, -1, 1)
    linear = x[:, j - 1] * (1 - w) + x[:, j] * w
    if T < 3:
        return linear
    bps = torch.tensor(sorted(breakpoints or []), dtype=t.dtype)
    seg = torch.searchsorted(bps, t, right=True)  # segment of the interval starting at each point
    ok_right = (j + 1 <= T - 1) & (seg[j - 1] == seg[torch.clamp(j, max=T - 1)])
    ok_left = (j - 2 >= 0) & (seg[torch.clamp(j - 2, min=0)] == seg[j - 1])
    a = torch.where(ok_right, j - 1, j - 2).clamp(0, T - 3)
    t0, t1, t2 = t[a], t[a + 1], t[a + 2]
    s = t_eval
    l0 = ((s - t1) * (s - t2) / ((t0 - t1) * (t0 - t2))).view(1, -1, 1)
    l1 = ((s - t0) * (s - t2) / ((t1 - t0) * (t1 - t2))).view(1, -1, 1)
    l2 = ((s - t0) * (s - t1) / ((t2 - t0) * (t2 - t1))).view(1, -1, 1)
    quad = x[:, a] * l0 + x[:, a + 1] * l1 + x[:, a + 2] * l2
    return torch.where((ok_right | ok_left).view(1, -1, 1), quad, linear)


# ----------------------------------------------------------------------------------------------
# per-design time stepping: every design has its own t, h, order and history (no gradients)
# ----------------------------------------------------------------------------------------------

EXACT_ACCEPT = False     # re-evaluate q, f at accepted points (else: linearised from the last Newton step)
USE_CONTRACTION = True   # stop Newton early when the contraction-based error estimate is small
COMPACT_FRACTION = 0.8   # re-bind to the unfinished designs once at most this fraction is unfinished


def _factor(a: Tensor, jac: tuple[Tensor, Tensor]):
    """LU of a·dq/dx + df/dx per design; singular matrices are replaced by identity and flagged."""
    M = a[:, None, None] * jac[0] + jac[1]
    lu, piv, info = torch.linalg.lu_factor_ex(M)
    bad = info != 0
    if bool(bad.any()):
        eye = torch.eye(M.shape[-1], dtype=M.dtype).expand_as(M)
        lu, piv, _ = torch.linalg.lu_factor_ex(torch.where(bad[:, None, None], eye, M))
    return lu, piv, bad


def _chord_newton_batch(bound: BoundDAE, x: Tensor, t: Tensor, a: Tensor, b: Tensor, tol: Tensor,
                        jac: tuple[Tensor, Tensor] | None, run: Tensor, stats: dict, max_iter: int = 25):
    """Per-design chord Newton for a q(x) + b + f(x, t) = 0 (a, t: (B,)); only designs in `run`
    iterate, each stops when its own update is within tol.

    Returns (x, converged (B,), q, f at the solution (B, n), jacobian-to-reuse).
    """
    if jac is None:
        _, _, jq, jf = bound.jacobians(x, t)
        jac = (jq, jf)
        stats["jacobians"] += 1
    lu, piv, bad = _factor(a, jac)
    pending = run & ~bad
    conv = torch.zeros_like(run)
    q_out = torch.zeros_like(x)
    f_out = torch.zeros_like(x)
    prev = torch.full_like(a, float("inf"))
    a_col = a[:, None]
    for it in range(1, max_iter + 1):
        q, f = bound.evaluate(x, t)
        stats["newton_iterations"] += 1
        R = a_col * q + b + f
        dx = torch.linalg.lu_solve(lu, piv, R.unsqueeze(-1)).squeeze(-1)
        pending = pending & torch.isfinite(dx).all(dim=1)
        dx = torch.where(pending[:, None], dx, torch.zeros_like(dx))
        x = x - dx
        size = (dx.abs() / (tol + 1e-8 * x.abs())).amax(dim=1)
        # converged when the update, or the error left after it (contraction θ: θ/(1-θ)·|dx|), is small
        theta = size / prev
        left = torch.where(torch.isfinite(prev) & (theta < 0.5), size * theta / (1 - theta), size)
        done = pending & ((size <= 1.0) | (left <= 1.0) if USE_CONTRACTION else (size <= 1.0))
        if bool(done.any()):
            conv = conv | done
            if EXACT_ACCEPT:
                q_new, f_new = q, f
            else:  # charges and currents at the final iterate, to first order in the last update
                q_new = q - (jac[0] @ dx.unsqueeze(-1)).squeeze(-1)
                f_new = f - (jac[1] @ dx.unsqueeze(-1)).squeeze(-1)
            q_out = torch.where(done[:, None], q_new, q_out)
            f_out = torch.where(done[:, None], f_new, f_out)
            pending = pending & ~done
        if not bool(pending.any()):
            break
        slow = pending & (size > CHORD_MAX_CONTRACTION * prev)
        if bool(slow.any()) or it % 10 == 0:  # stale Jacobian: refresh at the current iterates
            _, _, jq, jf = bound.jacobians(x, t)
            jac = (jq, jf)
            stats["jacobians"] += 1
            lu, piv, bad = _factor(a, jac)
            pending = pending & ~bad
            prev = torch.full_like(a, float("inf"))
        else:
            prev = size
    if EXACT_ACCEPT and bool(conv.any()):
        q_out, f_out = bound.evaluate(x, t)
    return x, conv, q_out, f_out, jac


def _transient_per_design(bound: BoundDAE, tstop: float, *, method: str, rtol: float, atol_scale: float,
                          hmax: float | None, uic: bool, x0: Tensor | None, progress: bool) -> TransientResult:
    """`transient` with an own time t_b and step h_b per design (see `transient`)."""
    dae = bound.dae
    with torch.no_grad():
        x = (initial_condition(bound, uic) if x0 is None else x0).detach()
        B, n = x.shape
        dtype = x.dtype
        atol = dae.atol.to(dtype) * atol_scale
        breakpoints = [b for b in bound.breakpoints() if 0 < b < tstop]
        stops = torch.tensor(breakpoints + [tstop], dtype=dtype)
        n_stops = stops.shape[0]
        hmax = hmax or tstop / 50
        tstep = dae.circuit.tstep
        h0 = min(tstep, tstop / 50) * 0.01
        hmin = tstop * 1e-14
        trap = method == "trap"

        q1, f1, jq0, jf0 = bound.jacobians(x, torch.zeros(B, dtype=dtype))
        differential = (jq0.abs().amax(dim=(0, 1)) > 0)
        jac = (jq0, jf0)
        t = torch.zeros(B, dtype=dtype)
        h = torch.full((B,), h0, dtype=dtype)
        npts = torch.ones(B, dtype=torch.long)    # points since the last reset (start or breakpoint)
        total = torch.ones(B, dtype=torch.long)   # accepted points since the start
        th = torch.tensor([-2 * h0, -h0, 0.0], dtype=dtype).repeat(B, 1)  # last 3 accepted times
        xh = x.unsqueeze(1).repeat(1, 3, 1)                                # and states
        q0 = q1.clone()   # q at the point before the last (BDF2)
        qdot = -f1        # dq/dt at the last point (trap)
        cap = 256
        out_t = torch.zeros(B, cap, dtype=dtype)
        out_x = torch.zeros(B, cap, n, dtype=dtype)
        out_x[:, 0] = x
        counts = torch.ones(B, dtype=torch.long)
        gid = torch.arange(B)   # global design index of each working row
        work = bound            # the DAE bound to the working rows (finished designs are dropped)
        stats = {"steps_mode": "per_design", "iterations": 0, "newton_iterations": 0, "rejected": 0,
                 "jacobians": 1, "compactions": 0}
        bar = _progress(progress, tstop)
        t_shown = 0.0
        while True:
            active = t < tstop * (1 - 1e-12)
            n_active = int(active.sum())
            if n_active == 0:
                break
            if n_active <= COMPACT_FRACTION * active.shape[0] and active.shape[0] - n_active >= 4:
                # drop finished designs: re-bind the DAE to the remaining ones
                keep = torch.nonzero(active).squeeze(1)
                gid = gid[keep]
                work = bound.dae.bind(bound.designs[gid], extra=bound.extra)
                t, h, npts, total, th, xh, q0, q1, qdot, active = (
                    v[keep] for v in (t, h, npts, total, th, xh, q0, q1, qdot, active))
                jac = None if jac is None else (jac[0][keep], jac[1][keep])
                stats["compactions"] += 1
            stats["iterations"] += 1
            nxt = torch.searchsorted(stops, t * (1 + 1e-12) + 1e-30, right=True).clamp(max=n_stops - 1)
            target = stops[nxt]
            hh = torch.minimum(h, torch.full_like(h, hmax))
            hit = t + hh >= target - 1e-9 * hh
            hh = torch.where(hit, target - t, hh)
            hh = torch.where(active, hh, torch.full_like(hh, h0))  # frozen designs: any finite step
            order2 = npts >= 2
            h_prev = th[:, 2] - th[:, 1]
            w = hh / h_prev
            if trap:
                a = torch.where(order2, 2.0 / hh, 1.0 / hh)
                c0 = -a
                c1 = torch.zeros_like(hh)
            else:
                a = torch.where(order2, (1 + 2 * w) / ((1 + w) * hh), 1.0 / hh)
                c0 = torch.where(order2, -(1 + w) / hh, -1.0 / hh)
                c1 = torch.where(order2, w * w / ((1 + w) * hh), torch.zeros_like(hh))
            b = c0[:, None] * q1 + c1[:, None] * q0
            if trap:
                b = b - torch.where(order2[:, None], qdot, torch.zeros_like(qdot))
            t_new = t + hh
            guess = _predict_batch(th, xh, t_new, total, npts)
            step_tol = NEWTON_LTE_FRACTION * (atol + rtol * xh[:, 2].abs())
            x_new, conv, q_new, f_new, jac = _chord_newton_batch(work, guess, t_new, a, b, step_tol, jac,
                                                                 active, stats)
            conv = conv & active
            failed = active & ~conv
            # local truncation error from the third divided difference (points since the reset)
            check = conv & (npts >= 3)
            x3 = _third_derivative_batch(th, xh, t_new, x_new)
            if trap:
                fac = hh ** 3 / 12.0
            else:
                fac = hh ** 3 * (1 + w) ** 2 / (6.0 * (1 + 2 * w))
            err = fac[:, None] * x3.abs()
            scale = atol + rtol * torch.maximum(x_new.abs(), xh[:, 2].abs())
            ratio = torch.where(differential, err / scale, torch.zeros_like(err)).amax(dim=1)
            ratio = torch.where(check, ratio, torch.zeros_like(ratio))
            lte_reject = check & (ratio > 1.0) & (hh > hmin * 10)
            accept = conv & ~lte_reject
            gain = (0.9 * ratio.clamp(min=1e-12) ** (-1 / 3))
            h_next = torch.where(check, hh * gain.clamp(0.3, 2.0), hh * 2.0)
            # step sizes: Newton failure /8, LTE rejection by the error ratio, acceptance as predicted
            h_new = torch.where(failed, hh / 8, h)
            h_new = torch.where(lte_reject, hh * gain.clamp(min=0.2), h_new)
            n_rej = int(failed.sum()) + int(lte_reject.sum())
            stats["rejected"] += n_rej
            if bool(failed.any()) and bool((h_new[failed] < hmin).any()):
                k = int(torch.nonzero(failed & (h_new < hmin))[0])
                raise ConvergenceError(f"transient: time step too small at t={float(t[k]):.6g} s "
                                       f"(Newton failed, design {int(gid[k])})")
            if bool(failed.any()):
                jac = None  # refresh the Jacobian at the next attempt
            reset = accept & hit & (target < tstop)
            following = stops[(nxt + 1).clamp(max=n_stops - 1)]
            following = torch.where(nxt + 1 < n_stops, following, torch.full_like(following, tstop))
            h_reset = torch.minimum(torch.minimum(h_next, 0.1 * (following - t_new)),
                                    torch.full_like(h_next, tstep))
            h_next = torch.where(reset, h_reset, h_next)
            h = torch.where(accept, h_next, h_new)
            # accept: shift the histories of the accepted designs
            acc = accept[:, None]
            t = torch.where(accept, t_new, t)
            th = torch.where(acc, torch.cat([th[:, 1:], t_new[:, None]], dim=1), th)
            xh = torch.where(acc[:, :, None], torch.cat([xh[:, 1:], x_new[:, None]], dim=1), xh)
            q0 = torch.where(acc, q1, q0)
            q1 = torch.where(acc, q_new, q1)
            qdot = torch.where(acc, -f_new, qdot)
            npts = torch.where(reset, torch.ones_like(npts), npts + accept.long())
            total = total + accept.long()
            idx = torch.nonzero(accept).squeeze(1)
            if idx.numel():
                g = gid[idx]
                if int(counts[g].max()) >= cap:
                    out_t = torch.cat([out_t, out_t.new_zeros(B, cap)], dim=1)
                    out_x = torch.cat([out_x, out_x.new_zeros(B, cap, n)], dim=1)
                    cap *= 2
                out_t[g, counts[g]] = t_new[idx]
                out_x[g, counts[g]] = x_new[idx]
                counts[g] += 1
            if progress:
                t_min = float(t.min())
                bar.update(t_min - t_shown)
                t_shown = t_min
        bar.close()
        T = int(counts.max())
        pos = torch.minimum(torch.arange(T)[None, :], (counts - 1)[:, None])  # pad: repeat the last point
        t_out = torch.gather(out_t[:, :T], 1, pos)
        x_out = torch.gather(out_x[:, :T], 1, pos[:, :, None].expand(B, T, n))
        steps = (counts - 1).to(torch.float64)
        stats.update({"steps": int(steps.max()), "steps_min": int(steps.min()),
                      "steps_mean": float(steps.mean()), "steps_max": int(steps.max())})
    return TransientResult(t_out, x_out, dae.names, stats, breakpoints, counts=counts, steps_mode="per_design")


def _predict_batch(th: Tensor, xh: Tensor, t_new: Tensor, total: Tensor, npts: Tensor) -> Tensor:
    """Per-design Newton guess: quadratic extrapolation through the last 3 accepted points (linear
    with only 2 points, the last point right after a reset)."""
    t0, t1, t2 = th[:, 0:1], th[:, 1:2], th[:, 2:3]
    x0, x1, x2 = xh[:, 0], xh[:, 1], xh[:, 2]
    s = t_new[:, None]
    quad = (x0 * ((s - t1) * (s - t2) / ((t0 - t1) * (t0 - t2)))
            + x1 * ((s - t0) * (s - t2) / ((t1 - t0) * (t1 - t2)))
            + x2 * ((s - t0) * (s - t1) / ((t2 - t0) * (t2 - t1))))
    lin = x2 + (x2 - x1) * ((s - t2) / (t2 - t1))
    guess = torch.where((total >= 3)[:, None], quad, lin)
    return torch.where((npts >= 2)[:, None], guess, x2)


def _third_derivative_batch(th: Tensor, xh: Tensor, t_new: Tensor, x_new: Tensor) -> Tensor:
    """x''' per design from the third divided difference of the last 3 accepted points and the new one."""
    t0, t1, t2, t3 = th[:, 0:1], th[:, 1:2], th[:, 2:3], t_new[:, None]
    x0, x1, x2, x3 = xh[:, 0], xh[:, 1], xh[:, 2], x_new
    d10, d11, d12 = (x1 - x0) / (t1 - t0), (x2 - x1) / (t2 - t1), (x3 - x2) / (t3 - t2)
    d20, d21 = (d11 - d10) / (t2 - t0), (d12 - d11) / (t3 - t1)
    return 6.0 * (d21 - d20) / (t3 - t0)


def _interpolate_per_design(t: Tensor, x: Tensor, t_eval: Tensor, counts: Tensor | None,
                            breakpoints: list[float] | None) -> Tensor:
    """`interpolate` for per-design grids t (B, T) (padded after counts[b] points) onto t_eval
    (E,) or (B, E); returns (B, E, n)."""
    B, T, n = x.shape
    t = t.to(x.dtype)
    t_eval = t_eval.to(x.dtype)
    if t_eval.dim() == 1:
        t_eval = t_eval.expand(B, -1)
    t_eval = t_eval.contiguous()
    if counts is None:
        counts = torch.full((B,), T, dtype=torch.long)
    last = (counts - 1)[:, None]
    j = torch.searchsorted(t.contiguous(), t_eval)
    j = torch.minimum(j.clamp(min=1), last)  # t_eval lies in [t[j-1], t[j]]

    def at(k: Tensor) -> tuple[Tensor, Tensor]:
        return (torch.gather(t, 1, k),
                torch.gather(x, 1, k[:, :, None].expand(-1, -1, n)))

    ta, xa = at(j - 1)
    tb, xb = at(j)
    w = ((t_eval - ta) / (tb - ta))[:, :, None]
    linear = xa * (1 - w) + xb * w
    if T < 3:
        return linear
    bps = torch.tensor(sorted(breakpoints or []), dtype=t.dtype)
    seg = torch.searchsorted(bps, t.contiguous(), right=True)
    sg = lambda k: torch.gather(seg, 1, k.clamp(0, T - 1))  # noqa: E731
    ok_right = (j + 1 <= last) & (sg(j - 1) == sg(j))
    ok_left = (j - 2 >= 0) & (sg(j - 2) == sg(j - 1))
    lo = torch.where(ok_right, j - 1, j - 2).clamp(min=0)
    lo = torch.minimum(lo, (last - 2).clamp(min=0))
    (t0, x0), (t1, x1), (t2, x2) = at(lo), at((lo + 1).clamp(max=T - 1)), at((lo + 2).clamp(max=T - 1))
    s = t_eval
    l0 = ((s - t1) * (s - t2) / ((t0 - t1) * (t0 - t2)))[:, :, None]
    l1 = ((s - t0) * (s - t2) / ((t1 - t0) * (t1 - t2)))[:, :, None]
    l2 = ((s - t0) * (s - t1) / ((t2 - t0) * (t2 - t1)))[:, :, None]
    quad = x0 * l0 + x1 * l1 + x2 * l2
    return torch.where((ok_right | ok_left)[:, :, None], quad, linear)


class _NoBar:
    def update(self, _: float) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, tstop: float):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    bar = tqdm(total=tstop, unit="s", unit_scale=True, desc="transient", leave=False)

    class _Bar:
        def update(self, h: float) -> None:
            bar.update(h)

        def close(self) -> None:
            bar.close()

    return _Bar()
