"""Per-design adaptive transient stepping (no gradients): every design has its own time, step,
order and history; all designs advance together in one vectorised chord Newton per iteration, each
accepting or rejecting its own step (masks); finished designs are dropped from the working batch."""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.dae import BoundDAE
from circuits.errors import ConvergenceError
from circuits.split import SplitDAE, matvec
from circuits.solve import (CHORD_MAX_CONTRACTION, NEWTON_LTE_FRACTION, TransientResult, _progress,
                            initial_condition)

# ----------------------------------------------------------------------------------------------
# per-design time stepping: every design has its own t, h, order and history (no gradients)
# ----------------------------------------------------------------------------------------------

USE_CONTRACTION = True   # stop Newton early when the contraction-based error estimate is small
RATE_DECAY = 0.3         # a carried contraction rate may fall at most this fast per iteration (CVODE)
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


def _chord_newton_batch(split: SplitDAE, x: Tensor, t: Tensor, a: Tensor, b: Tensor, tol: Tensor,
                        jac: tuple[Tensor, Tensor] | None, rate: Tensor, run: Tensor, stats: dict,
                        max_iter: int = 25):
    """Per-design chord Newton for a q(x) + b + f(x, t) = 0 (a, t: (B,)); only designs in `run`
    iterate, each stops when its own update, or the error left after it, is within tol.

    rate (B,): each design's contraction rate of the reused Jacobian, carried across steps as
    CVODE does: the first iteration of a step may converge on |dx|·θ/(1-θ) with the carried θ.
    Returns (x, converged (B,), q at the solution (B, n), jacobian-to-reuse, rate).  (The trapezoidal
    history needs dq/dt = a q + b at the solution, as SPICE takes it, so f is not returned.)
    This loop runs ~10^4 times per transient: it is written for few tensor ops per iteration.
    """
    if jac is None:
        jac = split.jacobians(x, t)
        stats["jacobians"] += 1
        rate = torch.ones_like(rate)
    rhs = b + split.sources(t)
    if split.q0 is not None:
        rhs = rhs + a[:, None] * split.q0
    linear = a[:, None, None] * split.C + split.G   # the linear devices' part of the residual
    lu, piv, bad = _factor(a, jac)
    pending = run & ~bad
    conv = torch.zeros_like(run)
    a_col = a[:, None]
    prev = None  # the previous iteration's update size (None right after a Jacobian refresh)
    inv_tol = 1.0 / tol
    for it in range(1, max_iter + 1):
        q_nl, f_nl = split.nonlinear_terms(x, t)
        R = matvec(linear, x) + rhs
        if f_nl is not None:
            R = R + f_nl
        if q_nl is not None:
            R = R + a_col * q_nl
        dx = torch.linalg.lu_solve(lu, piv, R.unsqueeze(-1)).squeeze(-1)
        size = (dx.abs() * inv_tol).amax(dim=1)
        pending = pending & torch.isfinite(size)
        x = x - dx * pending.to(dx.dtype)[:, None]  # (a product: much cheaper than torch.where here)
        # converged when the update, or the error left after it (contraction θ: θ/(1-θ)·|dx|), is small
        if prev is not None:  # measured contraction of this iteration (the carried one decays)
            rate = torch.where(pending, torch.maximum(size / prev, RATE_DECAY * rate), rate)
        if USE_CONTRACTION:
            left = torch.where(rate < 0.5, size * rate / (1 - rate), size)
        else:
            left = size
        done = pending & (left <= 1.0)
        stats["newton_iterations"] += 1
        if bool(done.any()):
            conv = conv | done
            pending = pending & ~done
        if not bool(pending.any()):
            break
        slow = pending & (size > CHORD_MAX_CONTRACTION * prev) if prev is not None else None
        if it % 10 == 0 or (slow is not None and bool(slow.any())):  # stale Jacobian: refresh
            jac = split.jacobians(x, t)
            stats["jacobians"] += 1
            lu, piv, bad = _factor(a, jac)
            pending = pending & ~bad
            rate = torch.ones_like(rate)
            prev = None
        else:
            prev = size
    return x, conv, split.charges(x, t), jac, rate


def transient_per_design(bound: BoundDAE, tstop: float, *, method: str, rtol: float, atol_scale: float,
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
        differential = (jq0.abs().amax(dim=(0, 1)) > 0).to(dtype)  # 1 for unknowns in some charge
        jac = (jq0, jf0)
        t = torch.zeros(B, dtype=dtype)
        h = torch.full((B,), h0, dtype=dtype)
        rate = torch.ones(B, dtype=dtype)  # Newton contraction rate per design (1: not known yet)
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
        work = SplitDAE(bound)  # the DAE bound to the working rows (finished designs are dropped)
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
                work = SplitDAE(bound.dae.bind(bound.designs[gid], extra=bound.extra))
                t, h, npts, total, th, xh, q0, q1, qdot, rate, active = (
                    v[keep] for v in (t, h, npts, total, th, xh, q0, q1, qdot, rate, active))
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
            hh = torch.where(active, torch.where(hit, target - t, hh), h0)  # frozen designs: any finite step
            order2 = npts >= 2
            h_prev = th[:, 2] - th[:, 1]
            w = hh / h_prev
            if trap:
                a = torch.where(order2, 2.0, 1.0) / hh
                b = torch.where(order2[:, None], -qdot, 0.0) - a[:, None] * q1
            else:
                a = torch.where(order2, (1 + 2 * w) / ((1 + w) * hh), 1.0 / hh)
                c0 = torch.where(order2, -(1 + w) / hh, -1.0 / hh)
                c1 = torch.where(order2, w * w / ((1 + w) * hh), 0.0)
                b = c0[:, None] * q1 + c1[:, None] * q0
            t_new = t + hh
            guess = _predict_batch(th, xh, t_new, total, npts)
            step_tol = NEWTON_LTE_FRACTION * (atol + rtol * xh[:, 2].abs())
            x_new, conv, q_new, jac, rate = _chord_newton_batch(work, guess, t_new, a, b, step_tol, jac, rate,
                                                                active, stats)
            conv = conv & active
            failed = active & ~conv
            # local truncation error from the third divided difference (points since the reset)
            check = conv & (npts >= 3)
            x4 = torch.cat([xh, x_new[:, None]], dim=1)   # the last 3 accepted points and the new one
            x3 = _third_derivative_batch(th, t_new, x4)
            fac = hh ** 3 / 12.0 if trap else hh ** 3 * (1 + w) ** 2 / (6.0 * (1 + 2 * w))
            scale = atol + rtol * torch.maximum(x_new.abs(), xh[:, 2].abs())
            ratio = torch.where(check, (x3.abs() * differential / scale).amax(dim=1) * fac, 0.0)
            lte_reject = check & (ratio > 1.0) & (hh > hmin * 10)
            accept = conv & ~lte_reject
            gain = 0.9 * ratio.clamp(min=1e-12) ** (-1 / 3)
            h_next = torch.where(check, gain.clamp(0.3, 2.0), 2.0) * hh
            # step sizes: Newton failure /8, LTE rejection by the error ratio, acceptance as predicted
            h_new = torch.where(failed, hh / 8, torch.where(lte_reject, hh * gain.clamp(min=0.2), h))
            n_failed = int(failed.sum())
            stats["rejected"] += n_failed + int(lte_reject.sum())
            if n_failed:
                if bool((h_new[failed] < hmin).any()):
                    k = int(torch.nonzero(failed & (h_new < hmin))[0])
                    nonfinite = work.bound.nonfinite(x_new, t_new, design_ids=gid)
                    raise ConvergenceError(f"transient: {nonfinite}" if nonfinite else
                                           f"transient: time step too small at t={float(t[k]):.6g} s "
                                           f"(Newton failed, design {int(gid[k])})")
                jac = None  # refresh the Jacobian at the next attempt
            if n_stops > 1:
                reset = accept & hit & (target < tstop)
                following = torch.where(nxt + 1 < n_stops, stops[(nxt + 1).clamp(max=n_stops - 1)], tstop)
                h_reset = torch.minimum(h_next, 0.1 * (following - t_new)).clamp(max=tstep)
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
                qdot = torch.where(acc, a[:, None] * q_new + b, qdot)
            else:
                q0 = torch.where(acc, q1, q0)
            q1 = torch.where(acc, q_new, q1)
            total = total + accept.long()
            idx = torch.nonzero(accept).squeeze(1)
            if idx.numel():
                if stats["iterations"] + 1 >= cap:  # counts grow by at most one per iteration
                    out_t = torch.cat([out_t, out_t.new_zeros(B, cap)], dim=1)
                    out_x = torch.cat([out_x, out_x.new_zeros(B, cap, n)], dim=1)
                    cap *= 2
                g = gid[idx]
                pos = counts[g]
                out_t[g, pos] = t_new[idx]
                out_x[g, pos] = x_new[idx]
                counts[g] = pos + 1
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
    with only 2 points, the last point right after a reset), as weights on the 3 points."""
    d = t_new[:, None] - th                                     # s - t_k
    gaps = th[:, :, None] - th[:, None, :] + torch.eye(3, dtype=th.dtype)
    quad = d.roll(1, 1) * d.roll(-1, 1) / gaps.prod(dim=2)      # Lagrange weights at s
    r = d[:, 2:3] / (th[:, 2:3] - th[:, 1:2])
    lin = torch.cat([torch.zeros_like(r), -r, 1 + r], dim=1)
    weights = torch.where((total >= 3)[:, None], quad, lin)
    weights = torch.where((npts >= 2)[:, None], weights, _LAST.to(th.dtype))
    return torch.bmm(weights.unsqueeze(1), xh).squeeze(1)


_LAST = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # weights that repeat the last point


def _third_derivative_batch(th: Tensor, t_new: Tensor, x4: Tensor) -> Tensor:
    """x''' per design: 6 times the third divided difference through the last 3 accepted points and
    the new one, x4 (B, 4, n), written as the weights 1 / prod_j (t_i - t_j)."""
    t4 = torch.cat([th, t_new[:, None]], dim=1)
    gaps = t4[:, :, None] - t4[:, None, :] + torch.eye(4, dtype=t4.dtype)
    weights = 6.0 / gaps.prod(dim=2)
    return torch.bmm(weights.unsqueeze(1), x4).squeeze(1)


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
