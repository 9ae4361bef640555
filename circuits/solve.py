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
NEWTON_LTE_FRACTION = 0.5  # transient Newton tolerance as a fraction of the LTE tolerance
CHORD_MAX_CONTRACTION = 0.7  # refresh the reused Jacobian when an iteration shrinks the update less
DEFAULT_BATCH_STEPS = "per_design"  # default steps mode of no-grad adaptive runs
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
        # no device voltage limiting: a design whose update exceeds 1e3 (V or A) is scaled to unit size
        size = dx.abs().amax(dim=1, keepdim=True)
        x = x - dx / torch.where(size > 1e3, size, torch.ones_like(size))
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

    def with_sensitivity(sol: Tensor) -> Tensor:
        """One Newton correction with the graph: exact dx/dp at the root (implicit-function theorem)."""
        if not (torch.is_grad_enabled() and bound.designs.requires_grad):
            return sol
        _, J = system(0.0)(sol)
        _, f = bound.evaluate(sol, t)  # jacobians() carry no graph; evaluate() does
        R = torch.where(hold_mask, torch.zeros_like(f), f)
        return sol - torch.linalg.solve(J.detach(), R.unsqueeze(-1)).squeeze(-1)

    with torch.no_grad():
        sol, ok, _ = _newton(system(0.0), x, tol)
        if not ok:
            y = x
            for gmin in GMIN_LADDER:
                y, ok, _ = _newton(system(gmin), y, tol)
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


def step_ceiling(bound: BoundDAE, tstop: float, hmax: float | None) -> float:
    """The largest step either integrator takes: hmax if given, else the circuit's `max_step`
    (ngspice's rule for raw netlists), never above tstop/50 of this run."""
    if hmax:
        return hmax
    return min(bound.dae.circuit.max_step or tstop / 50, tstop / 50)


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
    no gradients; result t is (B, T_max), see `TransientResult`, or (T,) for one design).  Default:
    "per_design" for adaptive no-grad runs (also for one design: ring5 2.9 s vs 5.2 s), else "shared".
    """
    if method not in ("trap", "bdf2"):
        raise ValueError(f"unknown integration method {method!r} (trap or bdf2)")
    needs_grad = torch.is_grad_enabled() and bound.designs.requires_grad
    if steps is None:
        steps = DEFAULT_BATCH_STEPS if (not needs_grad and dt is None) else "shared"
    if steps == "per_design":
        if needs_grad:
            raise ValueError("steps='per_design' is no-grad only: use steps='shared' for gradients "
                             "(or run under torch.no_grad() / detach the designs)")
        if dt is not None:
            raise ValueError("fixed dt needs steps='shared'")
        from circuits.solve_per_design import transient_per_design

        return transient_per_design(bound, tstop, method=method, rtol=rtol, atol_scale=atol_scale,
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
    hmax = step_ceiling(bound, tstop, hmax)
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
    q_uic = bound.uic_charge_offset(x_g) if uic and x0 is None else None
    if q_uic is not None:  # C/L ic= under uic: the charges start there, not at q(x0) (as ngspice)
        q_g = q_g + q_uic
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
                nonfinite = bound.nonfinite(x_new, t_new)
                raise ConvergenceError(f"transient: {nonfinite}" if nonfinite else
                                       f"transient: time step too small at t={t:.6g} s (Newton failed)")
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
        from circuits.solve_per_design import interpolate_per_design

        return interpolate_per_design(t, x, t_eval, counts, breakpoints)
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
