"""Per-design adaptive transient stepping (no gradients): every design has its own time, step,
order and history; all designs advance together in one vectorised chord Newton per iteration, each
accepting or rejecting its own step (masks); finished designs are dropped from the working batch.
The method and the step controller are `circuits.integrator`'s, called on (B,) tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.dae import BoundDAE
from circuits.dc import initial_condition
from circuits.errors import ConvergenceError
from circuits.limiting import Limiter
from circuits.integrator import (CHORD_MAX_CONTRACTION, CONTROLLER, Method, checked_unknowns, error_left_per_update,
                                 predictor_degree, second_order, step_ceiling, step_weights)
from circuits.result import TransientResult, progress_bar
from circuits.split import SplitDAE

# ----------------------------------------------------------------------------------------------
# per-design time stepping: every design has its own t, h, order and history (no gradients)
# ----------------------------------------------------------------------------------------------

COMPACT_FRACTION = 0.8   # re-bind to the unfinished designs once at most this fraction is unfinished
# junction/gate limiting runs in an iteration only after some node voltage moved more than this (V)
LIMIT_AFTER_MOVE = 0.5


def _factor(a: Tensor, jac: tuple[Tensor, Tensor]):
    """LU of a·dq/dx + df/dx per design; singular matrices are replaced by identity and flagged
    (bad: (B,) bool, or None when every matrix factored)."""
    M = torch.addcmul(jac[1], a[:, None, None], jac[0])
    lu, piv, info = torch.linalg.lu_factor_ex(M)
    if not bool(info.any()):
        return lu, piv, None
    bad = info != 0
    eye = torch.eye(M.shape[-1], dtype=M.dtype).expand_as(M)
    lu, piv, _ = torch.linalg.lu_factor_ex(torch.where(bad[:, None, None], eye, M))
    return lu, piv, bad


def _refreshed(split: SplitDAE, x: Tensor, t: Tensor, a: Tensor, pending: Tensor, stats: dict,
               limiter: Limiter | None = None):
    """(Jacobian, its LU, pivots, pending without the designs whose matrix is singular) at x."""
    jac = split.jacobians(x, t, limiter)
    stats["jacobians"] += 1
    lu, piv, bad = _factor(a, jac)
    return jac, lu, piv, pending if bad is None else pending & ~bad


def _chord_newton_batch(split: SplitDAE, x: Tensor, t: Tensor, a: Tensor, b: Tensor, tol: Tensor,
                        jac: tuple[Tensor, Tensor] | None, run: Tensor, stats: dict, max_iter: int = 25):
    """Per-design chord Newton for a q(x) + b + f(x, t) = 0 (a, t: (B,)); only designs in `run`
    iterate, each stops when its own update, or the error left after it, is within tol.

    The error left after an update is estimated from the contraction θ = |dx_k| / |dx_k-1| measured
    in this step as θ/(1-θ)·|dx| (θ < 1/2).  (Carrying θ over from earlier steps, as CVODE does,
    let steps converge after one iteration but cost 100x accuracy on a diode circuit; measured.)

    Devices limit their junction and gate voltages (`circuits.limiting`, as the shared and dense
    loops do) in the iterations after one that moved some node voltage by more than
    LIMIT_AFTER_MOVE: near a point where the Jacobian is almost singular (a CMOS inverter with
    lambda = 0 at its switching point) an unlimited update diverged (v(out) to 1e10 V), while
    running the limit functions in every iteration cost ring5 1.8x (they, not extra iterations).
    An iteration that limited a design refreshes the Jacobian where the devices were linearised
    and does not converge that design.
    Returns (x, converged (B,), q at the solution (B, n), jacobian-to-reuse).  (The trapezoidal
    history needs dq/dt = a q + b at the solution, as SPICE takes it, so f is not returned.)
    This loop runs ~10^4 times per transient: it is written for few tensor ops per iteration.
    """
    if jac is None:
        jac = split.jacobians(x, t)
        stats["jacobians"] += 1
    rhs = b + split.sources(t)
    if split.q0 is not None:
        rhs = rhs + a[:, None] * split.q0
    linear = torch.addcmul(split.G, a[:, None, None], split.C)  # the linear devices' part of the residual
    lu, piv, bad = _factor(a, jac)
    pending = run if bad is None else run & ~bad
    conv = torch.zeros_like(run)
    a_col = a[:, None]
    prev = None  # the previous iteration's update size (None right after a Jacobian refresh)
    inv_tol = 1.0 / tol
    left_per_update = 1.0
    limiter = Limiter() if split.limits else None
    moved_far = False  # the last update moved some node voltage by more than LIMIT_AFTER_MOVE
    for it in range(1, max_iter + 1):
        limited = None  # (B,) bool: the designs whose devices this iteration limited
        if limiter is not None:
            limiter.begin()
            limiter.enabled = moved_far
        q_nl, f_nl = split.nonlinear_terms(x, t, limiter)
        if limiter is not None and limiter.active:
            limited = limiter.rows
            with limiter.frozen():  # the Jacobian where the devices were linearised
                jac, lu, piv, pending = _refreshed(split, x, t, a, pending, stats, limiter)
            left_per_update = 1.0
            prev = None
        known = rhs if f_nl is None else rhs + f_nl
        if q_nl is not None:
            known = torch.addcmul(known, a_col, q_nl)
        R = torch.baddbmm(known.unsqueeze(-1), linear, x.unsqueeze(-1))  # the residual, (B, n, 1)
        dx = torch.linalg.lu_solve(lu, piv, R).squeeze(-1)
        size = (dx.abs() * inv_tol).amax(dim=1)
        pending = pending & torch.isfinite(size)
        x = torch.addcmul(x, dx, pending.to(dx.dtype)[:, None], value=-1.0)  # (cheaper than torch.where)
        if prev is not None:  # the contraction measured by this iteration
            left_per_update = error_left_per_update(size / prev)
        done = pending & (size * left_per_update <= 1.0)
        if limited is not None:
            done = done & ~limited
        stats["newton_iterations"] += 1
        conv = conv | done
        pending = pending & ~done
        if limiter is None:
            if not bool(pending.any()):
                break
        else:  # one sync for both
            far = pending & (dx[:, :split.voltages].abs().amax(dim=1) > LIMIT_AFTER_MOVE)
            left, moved_far = torch.stack([pending.any(), far.any()]).tolist()
            if not left:
                break
        slow = pending & (size > CHORD_MAX_CONTRACTION * prev) if prev is not None else None
        if it % 10 == 0 or (slow is not None and bool(slow.any())):  # stale Jacobian: refresh
            jac, lu, piv, pending = _refreshed(split, x, t, a, pending, stats)
            left_per_update = 1.0
            prev = None
        else:
            prev = size
    return x, conv, split.charges(x, t), jac


def transient_per_design(bound: BoundDAE, tstop: float, *, method: Method, rtol: float, atol_scale: float,
                          hmax: float | None, uic: bool, x0: Tensor | None, progress: bool) -> TransientResult:
    """`transient` with an own time t_b and step h_b per design (see `transient`)."""
    dae = bound.dae
    ctl = CONTROLLER
    # inference mode (not just no_grad): no version counters or autograd bookkeeping on the ~10^6
    # small tensor ops of a run (measured 8-15 % faster on ring5, B = 1024)
    with torch.inference_mode():
        x = (initial_condition(bound, uic) if x0 is None else x0).detach()
        B, n = x.shape
        dtype = x.dtype
        atol = dae.atol.to(dtype) * atol_scale
        breakpoints = [b for b in bound.breakpoints() if 0 < b < tstop]
        stops = torch.tensor(breakpoints + [tstop], dtype=dtype)
        n_stops = stops.shape[0]
        hmax = step_ceiling(bound, tstop, hmax)
        tstep = dae.circuit.tstep
        h0 = ctl.first_step(tstep, tstop)
        hmin = ctl.min_step(tstop)
        trap = method.name == "trap"

        q1, f1, jq0, jf0 = bound.jacobians(x, torch.zeros(B, dtype=dtype))
        q_uic = bound.uic_charge_offset(x) if uic and x0 is None else None
        if q_uic is not None:  # C/L ic= under uic: the charges start there, not at q(x0) (as ngspice)
            q1 = q1 + q_uic
        checked = checked_unknowns((jq0.abs().amax(dim=(0, 1)) > 0).to(dtype), len(dae.node_names))
        jac = (jq0, jf0)
        t = torch.zeros(B, dtype=dtype)
        h = torch.full((B,), h0, dtype=dtype)
        npts = torch.ones(B, dtype=torch.long)    # points since the last reset (start or breakpoint)
        total = torch.ones(B, dtype=torch.long)   # accepted points since the start
        th = torch.tensor([-2 * h0, -h0, 0.0], dtype=dtype).repeat(B, 1)  # last 3 accepted times
        xh = x.unsqueeze(1).repeat(1, 3, 1)                                # and states
        q0 = q1.clone()   # q at the point before the last (BDF2)
        qdot = -f1        # dq/dt at the last point (trap)
        accepted: list[tuple[Tensor, ...]] = []  # per iteration: (design ids, positions, t, x) accepted
        counts = torch.ones(B, dtype=torch.long)  # points per design so far
        gid = torch.arange(B)   # global design index of each working row
        work = SplitDAE(bound)  # the DAE bound to the working rows (finished designs are dropped)
        stats = {"steps_mode": "per_design", "iterations": 0, "newton_iterations": 0, "rejected": 0,
                 "jacobians": 1, "compactions": 0}
        rejected = torch.zeros((), dtype=torch.long)  # rejected steps, summed without a sync per step
        # constants as tensors: a Python scalar in torch.where costs an extra op every time
        h0_t = torch.tensor(h0, dtype=dtype)
        rtol_t = torch.tensor(rtol, dtype=dtype)
        bar = progress_bar(progress, tstop)
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
                work = SplitDAE(bound.dae.bind(bound.designs[gid], extra=bound.extra))
                t, h, npts, total, th, xh, q0, q1, qdot, active = (
                    v[keep] for v in (t, h, npts, total, th, xh, q0, q1, qdot, active))
                jac = None if jac is None else (jac[0][keep], jac[1][keep])
                stats["compactions"] += 1
            stats["iterations"] += 1
            if n_stops > 1:
                nxt = torch.searchsorted(stops, t * (1 + 1e-12) + 1e-30, right=True).clamp(max=n_stops - 1)
                target = stops[nxt]
            else:  # no source corners: the only stop is tstop
                target = stops[0]
            hh = h.clamp(max=hmax)
            hit = t + hh >= target - 1e-9 * hh
            hh = torch.where(active, torch.where(hit, target - t, hh), h0_t)  # frozen designs: any finite step
            order2 = second_order(npts, total)
            h_prev = th[:, 2] - th[:, 1]
            co = method.coefficients(hh, h_prev, order2)
            b = method.history(co, q1, q0, qdot)
            t_new = t + hh
            guess_weights, third_weights = _step_weights(th, t_new, hh / h_prev, total, npts)
            guess = _combine(guess_weights, xh)
            x_last = xh[:, 2]
            step_tol = ctl.newton_tolerance(atol, rtol_t, x_last.abs())
            x_new, conv, q_new, jac = _chord_newton_batch(work, guess, t_new, co.a, b, step_tol, jac, active, stats)
            conv = conv & active
            failed = active & ~conv
            # local truncation error from the third divided difference (points since the reset);
            # NaN for designs whose Newton failed, which every use below masks out
            check = conv & (npts >= 3)
            x4 = torch.cat([xh, x_new[:, None]], dim=1)   # the last 3 accepted points and the new one
            x3 = _combine(third_weights, x4)
            fac = method.lte_factor(hh, h_prev)
            scale = torch.addcmul(atol, torch.maximum(x_new.abs(), x_last.abs()), rtol_t)
            ratio = (x3.abs() * checked / scale).amax(dim=1) * fac * check.to(dtype)
            lte_reject = check & ctl.rejects(ratio, hh, hmin)
            accept = conv & ~lte_reject
            gain = ctl.gain(ratio)
            h_next = ctl.after_accept(hh, gain, check).clamp(min=10 * hmin)  # (as the shared loop)
            h_new = torch.where(failed, ctl.after_newton_failure(hh),
                                torch.where(lte_reject, ctl.after_rejection(hh, gain), h))
            rejected = rejected + (active & ~accept).sum()
            if bool(failed.any()):
                if bool((h_new[failed] < hmin).any()):
                    k = int(torch.nonzero(failed & (h_new < hmin))[0])
                    # the failed iterates may be NaN themselves: name a device that fails at the
                    # (finite) predicted state first
                    nonfinite = (work.bound.nonfinite(guess, t_new, design_ids=gid)
                                 or work.bound.nonfinite(x_new, t_new, design_ids=gid))
                    raise ConvergenceError(f"transient: {nonfinite}" if nonfinite else
                                           f"transient: time step too small at t={float(t[k]):.6g} s "
                                           f"(Newton failed, design {int(gid[k])})")
                jac = None  # refresh the Jacobian at the next attempt
            if n_stops > 1:
                reset = accept & hit & (target < tstop)
                following = torch.where(nxt + 1 < n_stops, stops[(nxt + 1).clamp(max=n_stops - 1)], tstop)
                h_reset = ctl.after_breakpoint(h_next, t_new, following, tstep)
                h_next = torch.where(reset, h_reset, h_next)
                npts = torch.where(reset, 1, npts + accept.long())
            else:
                npts = npts + accept.long()
            h = torch.where(accept, h_next, h_new)
            # accept: shift the histories of the accepted designs
            acc = accept[:, None]
            t = torch.where(accept, t_new, t)
            th = torch.where(acc, torch.cat([th[:, 1:], t_new[:, None]], dim=1), th)
            xh = torch.where(acc[:, :, None], x4[:, 1:], xh)
            if trap:  # dq/dt at the new point, as the trapezoidal rule defines it
                qdot = torch.where(acc, method.derivative(co, q_new, b), qdot)
            else:
                q0 = torch.where(acc, q1, q0)
            q1 = torch.where(acc, q_new, q1)
            total = total + accept.long()
            idx = torch.nonzero(accept).squeeze(1)
            g = gid[idx]
            pos = counts[g]
            counts[g] = pos + 1
            accepted.append((g, pos, t_new[idx], x_new[idx]))
            if bar.watching:  # (a sync per iteration: only with a bar or a step budget)
                t_min = float(t.min())
                bar.update(t_min - t_shown)
                t_shown = t_min
        bar.close()
    # outside inference mode: the results are ordinary tensors that later autograd code may use
    with torch.no_grad():
        counts = counts.clone()
        t_out, x_out = _assemble_outputs(x, accepted, counts)
    stats["rejected"] = int(rejected)
    steps = (counts - 1).to(torch.float64)
    stats.update({"steps": int(steps.max()), "steps_min": int(steps.min()),
                  "steps_mean": float(steps.mean()), "steps_max": int(steps.max())})
    if B == 1:  # one design: its grid is the whole grid, returned like a shared-steps result
        return TransientResult(t_out[0], x_out, dae.names, stats, breakpoints, steps_mode="per_design")
    return TransientResult(t_out, x_out, dae.names, stats, breakpoints, counts=counts, steps_mode="per_design")


def _assemble_outputs(x0: Tensor, accepted: list[tuple[Tensor, ...]], counts: Tensor) -> tuple[Tensor, Tensor]:
    """(t (B, T), x (B, T, n)) from the start x0 and the accepted (design ids, positions, t, x):
    design b's grid is t[b, :counts[b]], then its last point repeats.  One gather from the
    accepted rows (cheaper than scattering them into a padded array and padding it)."""
    B, n = x0.shape
    ids = torch.cat([a[0] for a in accepted])
    pos = torch.cat([a[1] for a in accepted])
    ts = torch.cat([x0.new_zeros(B)] + [a[2] for a in accepted])
    xs = torch.cat([x0] + [a[3] for a in accepted])
    T = int(counts.max())
    row = torch.zeros(B, T, dtype=torch.long)           # row of xs holding design b's k-th point
    row[:, 0] = torch.arange(B)
    row[ids, pos] = torch.arange(B, B + ids.numel())
    last = torch.minimum(torch.arange(T)[None, :], (counts - 1)[:, None])
    row = torch.gather(row, 1, last)                    # pad: repeat the last point
    return ts[row], xs[row]


_LAST = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # weights that repeat the last point


def _step_weights(th: Tensor, t_new: Tensor, w: Tensor, total: Tensor, npts: Tensor) -> tuple[Tensor, Tensor]:
    """Per design (B, 3) predictor weights and (B, 4) third-derivative weights (`step_weights`);
    the predictor of lower degree (`predictor_degree`) is linear extrapolation (w = h / h_prev) or the
    last point."""
    guess, third = step_weights(*th.unbind(1), t_new)
    guess, third = torch.stack(guess, dim=1), torch.stack(third, dim=1)
    if bool(((total < 4) | (npts < 3)).any()):
        degree = predictor_degree(npts, total)[:, None]
        lin = torch.stack([torch.zeros_like(w), -w, 1 + w], dim=1)
        guess = torch.where(degree == 2, guess, torch.where(degree == 1, lin, _LAST.to(th.dtype)))
    return guess, third


def _combine(weights: Tensor, points: Tensor) -> Tensor:
    """sum_k weights[:, k] points[:, k]: (B, K) and (B, K, n) -> (B, n)."""
    return torch.bmm(weights.unsqueeze(1), points).squeeze(1)


def interpolate_per_design(t: Tensor, x: Tensor, t_eval: Tensor, counts: Tensor | None,
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
