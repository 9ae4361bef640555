"""Reference solver: batched, differentiable transient analysis (float64); DC in `circuits.dc`.

Transient: trapezoidal or variable-step BDF2 (`circuits.integrator.Method`) with Newton at every
step, local-truncation-error step control (`circuits.integrator.StepController`) and breakpoints at
source corners.  Two batching policies share that integrator:
steps="shared": one step sequence for the whole batch (the step is chosen for the worst design), so
B designs cost one vectorised Newton per step; this loop also runs one design without gradients on
numpy (`circuits.dense`), where torch's per-op overhead would dominate.
steps="per_design" (no-grad, `circuits.solve_per_design`): every design has its own time, step and
history; all designs still advance together in one vectorised chord Newton per iteration.
Differentiability: Newton runs without a graph; each converged step is then re-expressed as one
Newton correction ``x* - J⁻¹ R(x*, history, p)`` with the graph attached, which gives the exact
first-order sensitivity (implicit-function theorem) at the cost of one extra evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from circuits.dae import BoundDAE
from circuits.dc import fixed_newton_tolerance, initial_condition, operating_point
from circuits.dense import DenseSystem
from circuits.discrete import (commit, event_fraction, event_tolerance, first_event, has_discrete, restore,
                               settle, snapshot)
from circuits.errors import ConvergenceError
from circuits.limiting import Limiter
from circuits.integrator import (CHORD_MAX_CONTRACTION, CONTROLLER, Coefficients, Method, checked_unknowns,
                                 method_of, predictor_degree, second_order, step_ceiling, step_weights)
from circuits.recurrence import AffineRecurrence
from circuits.result import TransientResult, check_breakpoints, check_step_ceiling, progress_bar
from circuits.solve_per_design import interpolate_per_design, transient_per_design

__all__ = ["TransientResult", "operating_point", "initial_condition", "transient", "interpolate",
           "step_ceiling"]

DEFAULT_BATCH_STEPS = "per_design"  # default steps mode of no-grad adaptive runs


def _refactor(bound: BoundDAE, x: Tensor, t: float, a: float, limiter: Limiter | None = None):
    """(dq/dx, df/dx) at x and the LU factors of a dq/dx + df/dx (None when singular)."""
    _, _, jq, jf = bound.jacobians(x, t, limiter=limiter)
    try:
        return (jq, jf), torch.linalg.lu_factor(a * jq + jf)
    except RuntimeError:
        return (jq, jf), None


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
    limiter = Limiter() if any(g.device.limits for g in bound.dae.groups) else None
    for it in range(1, max_iter + 1):
        if limiter is not None:
            limiter.begin()
        q, f = bound.evaluate(x, t, limiter=limiter)
        limited = limiter is not None and limiter.active
        if limited:  # the Jacobian where the devices were linearised
            with limiter.frozen():
                jac, lu = _refactor(bound, x, t, a, limiter)
            if lu is None:
                return x, False, it, None
            prev = None
        R = a * q + b + f
        dx = torch.linalg.lu_solve(lu[0], lu[1], R.unsqueeze(-1)).squeeze(-1)
        if not torch.isfinite(dx).all():
            return x, False, it, None
        x = x - dx
        size = float((dx.abs() / (tol + 1e-8 * x.abs())).max())
        if size <= 1.0 and not limited:
            return x, True, it, jac
        slow = prev is not None and size > CHORD_MAX_CONTRACTION * prev
        if slow or it % 10 == 0:  # stale Jacobian: refresh at the current iterate
            jac, lu = _refactor(bound, x, t, a)
            if lu is None:
                return x, False, it, None
            prev = None
            continue
        prev = size
    return x, False, max_iter, None


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
    "per_design" for adaptive no-grad runs, else "shared".  One design without gradients and
    without a fixed dt runs on numpy (`circuits.dense`) in either mode (its own steps either way).
    """
    integrator = method_of(method)
    needs_grad = torch.is_grad_enabled() and bound.designs.requires_grad
    discrete = has_discrete(bound)  # switches: their memory advances with the shared loop's steps
    if steps is None:
        steps = DEFAULT_BATCH_STEPS if (not needs_grad and dt is None and not discrete) else "shared"
    if steps not in ("shared", "per_design"):
        raise ValueError(f"unknown steps mode {steps!r} (shared or per_design)")
    if steps == "per_design" and needs_grad:
        raise ValueError("steps='per_design' is no-grad only: use steps='shared' for gradients "
                         "(or run under torch.no_grad() / detach the designs)")
    if steps == "per_design" and dt is not None:
        raise ValueError("fixed dt needs steps='shared'")
    # over the step budget before any work: the step ceiling alone, or one step per source corner
    check_step_ceiling(dt or step_ceiling(bound, tstop, hmax), tstop)
    breakpoints = [] if dt is not None else [b for b in bound.breakpoints() if 0 < b < tstop]
    check_breakpoints(len(breakpoints), tstop, "the sources")
    dense = bound.batch == 1 and not needs_grad and dt is None
    system = None
    if steps == "per_design" and not dense:
        if discrete:
            raise ValueError("circuits with switches (S, W) need steps='shared' for a batch of designs")
        return transient_per_design(bound, tstop, method=integrator, rtol=rtol, atol_scale=atol_scale,
                                    hmax=hmax, uic=uic, x0=x0, progress=progress)
    if dense:
        def start() -> Tensor:
            nonlocal system  # built anew: the switches' states are folded into its matrices
            system = DenseSystem(bound, [0.0] + breakpoints + [tstop])
            with torch.no_grad():
                return initial_condition(bound, uic, system.operating_point) if x0 is None else x0
    else:
        def start() -> Tensor:
            return initial_condition(bound, uic) if x0 is None else x0
    x = start()
    if discrete:  # the switches' states at the operating point (or the uic start)
        x = settle(bound, x, start)
    if dense:
        stepper = _DenseSteps(bound, system, x)
    else:
        stepper = _TorchSteps(bound, x, needs_grad, fixed_newton_tolerance(bound, x) if dt else None)
    q_uic = bound.uic_charge_offset(x) if uic and x0 is None else None
    if q_uic is not None:  # C/L ic= under uic: the charges start there, not at q(x0) (as ngspice)
        stepper.q_start = stepper.q_start + stepper.convert(q_uic)
    atol = stepper.convert(bound.dae.atol.to(x.dtype) * atol_scale)
    res = _shared_steps(stepper, integrator, tstop, rtol=rtol, atol=atol, dt=dt,
                        hmax=step_ceiling(bound, tstop, hmax), tstep=bound.dae.circuit.tstep,
                        breakpoints=breakpoints, progress=progress)
    res.names = bound.dae.names
    if dense:  # one design's own steps: the per-design statistics too
        st = res.stats
        st.update({"steps_mode": steps, "iterations": st["steps"] + st["rejected"], "steps_min": st["steps"],
                   "steps_mean": float(st["steps"]), "steps_max": st["steps"]})
        res.steps_mode = steps
    return res


def _shared_steps(stepper, method: Method, tstop: float, *, rtol: float, atol, dt: float | None,
                  hmax: float, tstep: float, breakpoints: list[float], progress: bool) -> TransientResult:
    """The shared-steps loop: every design of the batch takes the same steps (`stepper` holds the
    states: torch (B, n) or, for one design, numpy (n,))."""
    ctl = CONTROLLER
    stops = breakpoints + [tstop]
    h = dt if dt is not None else ctl.first_step(tstep, tstop)
    hmin = ctl.min_step(tstop)
    ts = [0.0]
    q1 = stepper.q_start   # q at the last point (graph-carrying when needed)
    q0 = q1                # q at the point before (BDF2)
    qdot = q1 * 0.0        # dq/dt at the last point (trap; unused until a second-order step)
    hist_t = [0.0]         # times since the last reset (start or breakpoint)
    t = 0.0
    stats = {"steps": 0, "rejected": 0, "newton_iterations": 0}
    discrete = has_discrete(stepper.bound)
    event_tol = event_tolerance(tstep, tstop, hmin)
    h_event = None  # while a switching event is being located: the step that first crossed it
    after_switch = None  # dq/dt just after a switching point, until the first step from it is taken
    next_stop = 0
    ahead = RUN_AHEAD  # the next run-ahead block's length
    bar = progress_bar(progress, tstop)
    while t < tstop * (1 - 1e-12):
        while stops[next_stop] <= t * (1 + 1e-12) + 1e-30:
            next_stop += 1
        target = stops[next_stop]
        h = min(h, hmax)
        hit_stop = t + h >= target - 1e-9 * h if dt is None else False
        if hit_stop:
            h = target - t
        npts = len(hist_t)
        h_prev = hist_t[-1] - hist_t[-2] if npts >= 2 else None
        co = method.coefficients(h, h_prev, second_order(npts, len(ts)))
        if stepper.runs_ahead and h == hmax and npts >= 3 and not hit_stop and not method.uses_previous_step:
            block = _run_ahead(stepper, method, co, t, h, target, q1, qdot, ts[-3:], atol, rtol, hmin,
                               ahead)
            if block is not None and discrete:  # keep the steps before the first switching event
                block = _before_event(stepper, block)
            # a block taken whole (no step shrank) lets the next one be twice as long
            ahead = min(2 * ahead, RUN_AHEAD_MAX) if block is not None and len(block[0]) == ahead else RUN_AHEAD
            if block is not None:
                times, xs, zs, h = block
                n = xs.shape[1]
                stepper.accept_many(xs)
                bar.update(times[-1] - t, len(times))
                t = times[-1]
                ts += times
                hist_t += times
                stats["steps"] += len(times)
                stats["newton_iterations"] += len(times)
                q0 = zs[-2, :n] if len(times) > 1 else q1
                q1, qdot = zs[-1, :n], zs[-1, n:]
                continue
        t_new = t + h
        b = method.history(co, q1, q0, qdot)
        # (predictor, third-derivative) weights on the last 3 points (and the new one)
        weights = step_weights(ts[-3], ts[-2], ts[-1], t_new) if len(ts) >= 3 else None
        degree = predictor_degree(npts, len(ts))
        if degree == 0:
            predictor = None  # the last point
        elif degree == 1:  # linear extrapolation from the last two points
            w = h / (ts[-1] - ts[-2])
            predictor = (0.0, -w, 1 + w)
        else:
            predictor = weights[0]
        x_new, ok, iters = stepper.newton(predictor, t_new, co.a, stepper.detach(b), atol, rtol)
        stats["newton_iterations"] += iters
        event = event_fraction(stepper.bound, stepper.last, x_new) if discrete and ok else None
        if event is not None and dt is None and h > 2 * event_tol:
            # a switch changed state inside the step: retry ending just before the threshold
            # crossing (linear estimate), then with a step of about event_tol over it, so that the
            # jump lies between two points event_tol apart
            stats["rejected"] += 1
            h_event = h_event or h  # the step before the location: the restart step after it
            before = event * h - 0.5 * event_tol
            h = before if before > 0.5 * event_tol else max(event * h + 0.5 * event_tol, hmin)
            stepper.forget_jacobian()
            continue
        if event is not None:
            # located: the states change here and the step is solved again with them (the jump is
            # the switching itself, not a truncation error)
            saved = snapshot(stepper.bound)
            commit(stepper.bound, x_new)
            stepper.refold()
            x_new, ok, iters = stepper.newton(predictor, t_new, co.a, stepper.detach(b), atol, rtol)
            stats["newton_iterations"] += iters
            if not ok:
                restore(stepper.bound, saved)
                stepper.refold()
        if not ok:
            stats["rejected"] += 1
            h = ctl.after_newton_failure(h)
            stepper.forget_jacobian()
            if h < hmin:
                raise ConvergenceError(stepper.failure(x_new, t_new, t))
            continue
        if event is not None:
            h_next = h
        elif after_switch is not None:
            # the first step from a switching point has no LTE stencil (the points before it lie
            # across the jump), and unchecked it ran at the step before the switching, doubled on
            # the next: backward Euler is checked against a trapezoidal step from the same point
            # with the derivative just after the switching (their difference is Euler's error
            # h^2/2 x''), and the trapezoidal solution is kept unless a switch changes state in it
            co_tr = Coefficients(2.0 / h, -2.0 / h, 0.0, 1.0)
            b_tr = method.history(co_tr, q1, q0, after_switch)
            x_tr, ok_tr, iters = stepper.newton(None, t_new, co_tr.a, stepper.detach(b_tr), atol, rtol)
            stats["newton_iterations"] += iters
            ratio = stepper.difference(x_new, x_tr, atol, rtol) if ok_tr else math.inf
            gain = ctl.safety * max(ratio, 1e-12) ** -0.5 if math.isfinite(ratio) else ctl.reject_min
            if ctl.rejects(ratio, h, hmin):
                stats["rejected"] += 1
                h = h * max(gain, ctl.reject_min)
                stepper.forget_jacobian()
                continue
            if ok_tr and event_fraction(stepper.bound, stepper.last, x_tr) is None:
                x_new, co, b = x_tr, co_tr, b_tr
            h_next = max(ctl.after_accept(h, gain, True), 10 * hmin)
        elif dt is None and npts >= 3:
            ratio = method.lte_factor(h, h_prev) * stepper.lte(weights[1], x_new, atol, rtol)
            gain = ctl.gain(ratio)
            if ctl.rejects(ratio, h, hmin):
                stats["rejected"] += 1
                h = ctl.after_rejection(h, gain)
                continue
            # (never below the size at which the LTE stops rejecting: a noise-dominated estimate
            # would shrink the step below the resolution of t)
            h_next = max(ctl.after_accept(h, gain, True), 10 * hmin)
        else:
            h_next = h if dt is not None else ctl.after_accept(h, 1.0, False)
        q_new = stepper.accept(x_new, t_new, co, b)
        t = t_new
        ts.append(t)
        q0, q1, qdot = q1, q_new, method.derivative(co, q_new, b)
        hist_t.append(t)
        stats["steps"] += 1
        bar.update(h)
        h = h_next
        if hit_stop and target < tstop:  # a source corner: restart at first order with a small step
            hist_t = [t]
            following = stops[next_stop + 1] if next_stop + 1 < len(stops) else tstop
            h = ctl.after_breakpoint(h, t, following, tstep)
        if discrete:
            if event is not None:  # a switching point: restart at first order, as at a breakpoint
                hist_t = [t]
                # the result's breakpoints: interpolation is linear across the jump, and no
                # quadratic stencil on either side reaches over it
                breakpoints += [ts[-2], t]
                h = ctl.after_breakpoint(max(h, h_event or h), t, max(target, t + h), tstep)
                h_event = None
        # for the next step's check (above), the derivative just after the switching, -f(x): the
        # step's own derivative mixes both sides of the jump (and so short a step amplifies
        # Newton's residual in it)
        after_switch = stepper.rate(x_new, t) if discrete and event is not None and dt is None else None
    bar.close()
    stats.update(stepper.stats())
    t_out, x_out = stepper.outputs(ts)
    return TransientResult(t_out, x_out, [], stats, breakpoints)


RUN_AHEAD = 64  # steps solved ahead of their LTE checks at a pinned step (one linear design)
RUN_AHEAD_MAX = 4096  # the longest block, reached by doubling while blocks are taken whole


def _before_event(stepper, block):
    """A run-ahead block cut before its first step in which a switch changes state (that step is
    then taken, and the event located, step by step); None when it is the first."""
    times, xs, zs, h_next = block
    previous = np.vstack([stepper.last[None], xs[:-1]])
    first = first_event(stepper.bound, previous, xs)
    if first is None:
        return block
    if first == 0:
        return None
    return times[:first], xs[:first], zs[:first], times[first] - times[first - 1]


def _run_ahead(stepper, method: Method, co: Coefficients, t: float, h: float, target: float, q1, qdot,
               last_ts: list[float], atol, rtol: float, hmin: float, size: int = RUN_AHEAD):
    """Steps at the step ceiling h, solved in a row before the next stop and checked together.

    A linear design whose step is pinned at hmax (the controller would grow it) repeats one affine
    step map (`DenseSystem.step_map`, built from the method's history and derivative); per step the
    loop then costs one small matrix-vector product, and the LTE checks of up to `size` steps are
    computed in one go.  The steps kept are exactly those the step-by-step loop accepts at h: up to
    the first whose ratio rejects it (not taken) or asks for a smaller next step (taken, and its
    next step returned).  Returns (times, states (K, n), [q; qdot] (K, 2n), next step) or None.
    """
    ctl = CONTROLLER
    times, tt = [], t
    while len(times) < size and tt + h < target - 1e-9 * h:
        tt = tt + h
        times.append(tt)
    if len(times) < 2:
        return None
    W = stepper.step_map(method, co)
    if W is None:
        return None
    n = W.shape[0] // 3
    inputs = np.hstack([stepper.system.sources.many(times), np.ones((len(times), 1))])  # [s; 1]
    drive = inputs @ W[n:, 2 * n:].T        # the sources' part of each step's [q; qdot]
    Z = stepper.recurrence(W).run(np.concatenate([q1, qdot]), drive)
    before = np.vstack([np.concatenate([q1, qdot])[None], Z[:-1]])
    X = before @ W[:n, :2 * n].T + inputs @ W[:n, 2 * n:].T
    finite = np.isfinite(X).all(axis=1) & np.isfinite(Z).all(axis=1)
    K = len(times) if finite.all() else int(np.argmin(finite))
    if K == 0:
        return None
    ratios = method.lte_factor(h, h) * stepper.lte_many(last_ts + times[:K], X[:K], atol, rtol)
    # the controller's rules on all K ratios at once (`StepController.rejects`, `gain`, `after_accept`)
    rejected = (ratios > 1.0) & (h > hmin * 10)
    h_after = np.minimum(np.maximum(ctl.safety * np.maximum(ratios, 1e-12) ** (-1 / 3), ctl.shrink_min),
                         ctl.grow_max) * h
    ends = rejected | (h_after < h)  # the first such step ends the block (taken unless rejected)
    first = int(np.argmax(ends)) if ends.any() else K
    taken = first + 1 if first < K and not rejected[first] else first
    if taken == 0:
        return None
    return times[:taken], X[:taken], Z[:taken], float(h_after[taken - 1])


class _TorchSteps:
    """States of a batch as torch (B, n) tensors; with gradients, each accepted step re-attaches the
    graph (`_graph_step`)."""

    def __init__(self, bound: BoundDAE, x: Tensor, needs_grad: bool, fixed_tol: Tensor | None):
        self.bound, self.needs_grad, self.fixed_tol = bound, needs_grad, fixed_tol
        with torch.no_grad():
            _, _, jq0, _ = bound.jacobians(x, 0.0)
        in_charge = (jq0.abs().amax(dim=(0, 1)) > 0).to(x.dtype)
        self.checked = checked_unknowns(in_charge, len(bound.dae.node_names))
        with torch.enable_grad() if needs_grad else torch.no_grad():
            self.q_start = bound.evaluate(x, 0.0)[0]
        self.jac = None  # (dq/dx, df/dx) reused across Newton iterations and steps while it converges
        self.runs_ahead = False
        self.recent = [x.detach()]  # the last (up to 3) accepted states, without graph
        self.abs_last = self.recent[-1].abs()
        self.xs_out = [x]

    @property
    def last(self) -> Tensor:
        """The last accepted state."""
        return self.xs_out[-1]

    @staticmethod
    def convert(v: Tensor) -> Tensor:
        return v

    @staticmethod
    def detach(v: Tensor) -> Tensor:
        return v.detach()

    def predict(self, weights) -> Tensor:
        """Newton's initial guess: weights on the last 3 accepted states (None: the last state)."""
        if weights is None:
            return self.recent[-1]
        out = None
        for w, x in zip(weights[3 - len(self.recent):], self.recent):
            if w != 0.0:
                out = x * w if out is None else out + x * w
        return out

    def lte(self, w3, x_new: Tensor, atol: Tensor, rtol: float) -> float:
        """Largest |third derivative| / tolerance over the checked unknowns (`checked_unknowns`; the
        derivative from weights on the last 3 states and x_new)."""
        x3 = self.recent[-3] * w3[0] + self.recent[-2] * w3[1] + self.recent[-1] * w3[2] + x_new * w3[3]
        scale = atol + rtol * torch.maximum(x_new.abs(), self.abs_last)
        return float((x3.abs() * self.checked / scale).max())

    def difference(self, x_a: Tensor, x_b: Tensor, atol: Tensor, rtol: float) -> float:
        """Largest |x_a - x_b| / tolerance over the checked unknowns (as `lte`)."""
        scale = atol + rtol * torch.maximum(x_a.abs(), self.abs_last)
        return float(((x_a - x_b).abs() * self.checked / scale).max())

    def rate(self, x: Tensor, t: float) -> Tensor:
        """dq/dt at the last accepted point x: -f(x, t) in the equations with a charge there, else
        0 (graph-carrying when needed)."""
        with torch.no_grad():
            _, _, jq, _ = self.bound.jacobians(x, t)
        rows = (jq.abs().amax(dim=-1) > 0).to(x.dtype)
        with torch.enable_grad() if self.needs_grad else torch.no_grad():
            return -self.bound.evaluate(self.xs_out[-1], t)[1] * rows

    def newton(self, predictor, t: float, a: float, b: Tensor, atol: Tensor, rtol: float):
        """Solve the step from the predicted state: (x, converged, iterations)."""
        tol = self.fixed_tol if self.fixed_tol is not None else CONTROLLER.newton_tolerance(atol, rtol, self.abs_last)
        with torch.no_grad():
            x, ok, iters, self.jac = _chord_newton(self.bound, self.predict(predictor), t, a, b, tol, self.jac)
        return x, ok, iters

    def forget_jacobian(self) -> None:
        self.jac = None

    def refold(self) -> None:
        """After the switches' states changed."""
        self.jac = None

    def accept(self, x_new: Tensor, t_new: float, co: Coefficients, b: Tensor) -> Tensor:
        """Store the accepted state; return q there (graph-carrying when needed)."""
        if self.needs_grad:
            x_out, q = _graph_step(self.bound, x_new, t_new, co.a, b)
        else:
            with torch.no_grad():
                x_out, q = x_new, self.bound.evaluate(x_new, t_new)[0]
        self.recent = self.recent[-2:] + [x_new]
        self.abs_last = x_new.abs()
        self.xs_out.append(x_out)
        return q

    def failure(self, x_new: Tensor, t_new: float, t: float) -> str:
        nonfinite = self.bound.nonfinite(x_new, t_new)
        return (f"transient: {nonfinite}" if nonfinite else
                f"transient: time step too small at t={t:.6g} s (Newton failed)")

    @staticmethod
    def stats() -> dict:
        return {}

    def outputs(self, ts: list[float]) -> tuple[Tensor, Tensor]:
        return torch.tensor(ts, dtype=self.xs_out[0].dtype), torch.stack(self.xs_out, dim=1)


class _DenseSteps:
    """States of one design as numpy (n,) arrays, solved by `DenseSystem` (no gradients)."""

    def __init__(self, bound: BoundDAE, system: DenseSystem, x: Tensor):
        self.bound = bound
        self.system = system
        x0 = x[0].detach().numpy().copy()
        self.checked = checked_unknowns(self.system.start(x0), len(bound.dae.node_names))
        self.q_start = self.system.charges(x0, 0.0)
        # rows 0-2: the last 3 accepted states (the start repeated); row 3: the step being checked
        self.recent = np.stack([x0, x0, x0, x0])
        self.runs_ahead = not system.nonlinear  # see `_run_ahead`
        self._map_key, self._map = None, None  # the step map of the last coefficients
        self._recurrence: AffineRecurrence | None = None  # and its charge recurrence
        self.abs_last = np.abs(x0)
        self._checked = (None, None)  # (x, |x|) of the last LTE check: accept reuses |x|
        self.xs_out = [x0[None]]  # accepted states in blocks (k, n)

    @property
    def last(self) -> np.ndarray:
        """The last accepted state."""
        return self.recent[2]

    @staticmethod
    def convert(v: Tensor) -> np.ndarray:
        return v.detach().reshape(-1, v.shape[-1])[0].numpy() if v.dim() > 1 else v.detach().numpy()

    @staticmethod
    def detach(v: np.ndarray) -> np.ndarray:
        return v

    def predict(self, weights) -> np.ndarray:
        return self.recent[2] if weights is None else np.dot(weights, self.recent[:3])

    def lte(self, w3, x_new: np.ndarray, atol: np.ndarray, rtol: float) -> float:
        self.recent[3] = x_new
        abs_new = np.abs(x_new)
        self._checked = (x_new, abs_new)
        scale = atol + rtol * np.maximum(abs_new, self.abs_last)
        return float((np.abs(np.dot(w3, self.recent)) * self.checked / scale).max())

    def lte_many(self, times: list[float], xs: np.ndarray, atol: np.ndarray, rtol: float) -> np.ndarray:
        """`lte` of K consecutive new states xs (K, n) at times[3:] (times[:3]: the last 3 accepted)."""
        X = np.concatenate([self.recent[:3], xs])
        T = np.asarray(times)
        w = step_weights(T[:-3], T[1:-2], T[2:-1], T[3:])[1]
        x3 = w[0][:, None] * X[:-3] + w[1][:, None] * X[1:-2] + w[2][:, None] * X[2:-1] + w[3][:, None] * X[3:]
        absX = np.abs(X)
        scale = atol + rtol * np.maximum(absX[3:], absX[2:-1])
        return (np.abs(x3) * self.checked / scale).max(axis=1)

    def difference(self, x_a: np.ndarray, x_b: np.ndarray, atol: np.ndarray, rtol: float) -> float:
        """Largest |x_a - x_b| / tolerance over the checked unknowns (as `lte`)."""
        scale = atol + rtol * np.maximum(np.abs(x_a), self.abs_last)
        return float((np.abs(x_a - x_b) * self.checked / scale).max())

    def rate(self, x: np.ndarray, t: float) -> np.ndarray:
        """dq/dt at the accepted point x: -f(x, t) in the equations with a charge there, else 0."""
        return -self.system.flow(x, t) * self.system.charge_rows(x, t)

    def newton(self, predictor, t: float, a: float, b: np.ndarray, atol: np.ndarray, rtol: float):
        if not self.system.nonlinear:  # one exact solve: no initial guess, no tolerance
            return self.system.solve_linear(t, a, b)
        tol = CONTROLLER.newton_tolerance(atol, rtol, self.abs_last)
        return self.system.newton(self.predict(predictor), t, a, b, tol)

    def forget_jacobian(self) -> None:
        self.system.forget_jacobian()

    def refold(self) -> None:
        """After the switches' states changed: their conductances are folded into the system's
        matrices, which are built again."""
        self.system = DenseSystem(self.bound, self.system.edges, self.system.sources)
        self.system.start(self.recent[2])
        self._map_key, self._map, self._recurrence = None, None, None

    def accept(self, x_new: np.ndarray, t_new: float, co: Coefficients, b: np.ndarray) -> np.ndarray:
        """Store the accepted state; return q there."""
        self.recent[:3] = self.recent[1:]  # (row 3 holds x_new after an LTE check; set it anyway)
        self.recent[2] = x_new
        self.abs_last = self._checked[1] if self._checked[0] is x_new else np.abs(x_new)
        self.xs_out.append(x_new[None])
        return self.system.charges(x_new, t_new)

    def accept_many(self, xs: np.ndarray) -> None:
        """Store K accepted consecutive states (K, n) (from `_run_ahead`)."""
        self.recent[:3] = np.concatenate([self.recent[:3], xs])[-3:]
        self.abs_last = np.abs(xs[-1])
        self.xs_out.append(xs)

    def step_map(self, method: Method, co: Coefficients) -> np.ndarray | None:
        """`DenseSystem.step_map`, kept while the coefficients are unchanged."""
        key = (co.a, co.c0, co.c1, co.k)
        if self._map_key != key:
            self._map_key, self._map, self._recurrence = key, self.system.step_map(method, co), None
        return self._map

    def recurrence(self, W: np.ndarray) -> AffineRecurrence:
        """The charge recurrence of the last step map W (built once per map)."""
        if self._recurrence is None:
            n = W.shape[0] // 3
            self._recurrence = AffineRecurrence(W[n:, :2 * n])
        return self._recurrence

    def failure(self, x_new: np.ndarray, t_new: float, t: float) -> str:
        nonfinite = self.bound.nonfinite(torch.from_numpy(x_new)[None], t_new)
        return (f"transient: {nonfinite}" if nonfinite else
                f"transient: time step too small at t={t:.6g} s (Newton failed)")

    def stats(self) -> dict:
        return {"jacobians": self.system.jacobians, "solves": self.system.iterations}

    def outputs(self, ts: list[float]) -> tuple[Tensor, Tensor]:
        return torch.tensor(ts, dtype=torch.float64), torch.from_numpy(np.concatenate(self.xs_out))[None]


def _graph_step(bound: BoundDAE, x_new: Tensor, t_new: float, a: float, b: Tensor) -> tuple[Tensor, Tensor]:
    """Re-attach the autograd graph to a converged step: one Newton correction with the graph;
    returns (x, q) at the new point."""
    q, f = bound.evaluate(x_new.detach(), t_new)
    _, _, jq, jf = bound.jacobians(x_new.detach(), t_new)
    R = a * q + b + f
    J = (a * jq + jf).detach()
    dx = torch.linalg.solve(J, R.unsqueeze(-1)).squeeze(-1)
    return x_new.detach() - dx, q - (jq.detach() @ dx.unsqueeze(-1)).squeeze(-1)


def interpolate(t: Tensor, x: Tensor, t_eval: Tensor, breakpoints: list[float] | None = None,
                counts: Tensor | None = None) -> Tensor:
    """Interpolate x (B, T, n) sampled at t (T,) onto t_eval: quadratic (3-point Lagrange) within
    smooth stretches, never across a breakpoint (there the slope jumps), linear where no 3-point
    stencil fits.  Per-design grids: t (B, T) with design b's points t[b, :counts[b]] (padded
    after), t_eval (E,) or (B, E); returns (B, E, n) either way."""
    if t.dim() == 2:

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


