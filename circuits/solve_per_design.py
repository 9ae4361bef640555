"""Per-design adaptive transient stepping (no gradients): every design has its own time, step,
order and history; all designs advance together in one vectorised chord Newton per iteration, each
accepting or rejecting its own step (masks); finished designs are dropped from the working batch."""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.dae import BoundDAE
from circuits.errors import ConvergenceError
from circuits.split import SplitDAE
from circuits.solve import (CHORD_MAX_CONTRACTION, NEWTON_LTE_FRACTION, TransientResult, _progress,
                            initial_condition)

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


def _chord_newton_batch(split: SplitDAE, x: Tensor, t: Tensor, a: Tensor, b: Tensor, tol: Tensor,
                        jac: tuple[Tensor, Tensor] | None, run: Tensor, stats: dict, max_iter: int = 25):
    """Per-design chord Newton for a q(x) + b + f(x, t) = 0 (a, t: (B,)); only designs in `run`
    iterate, each stops when its own update is within tol.

    Returns (x, converged (B,), q, f at the solution (B, n), jacobian-to-reuse).
    """
    if jac is None:
        jac = split.jacobians(x, t)
        stats["jacobians"] += 1
    sources = split.sources(t)
    lu, piv, bad = _factor(a, jac)
    pending = run & ~bad
    conv = torch.zeros_like(run)
    q_out = torch.zeros_like(x)
    f_out = torch.zeros_like(x)
    prev = torch.full_like(a, float("inf"))
    a_col = a[:, None]
    for it in range(1, max_iter + 1):
        q, f = split.evaluate(x, t, sources)
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
            jac = split.jacobians(x, t)
            stats["jacobians"] += 1
            lu, piv, bad = _factor(a, jac)
            pending = pending & ~bad
            prev = torch.full_like(a, float("inf"))
        else:
            prev = size
    if EXACT_ACCEPT and bool(conv.any()):
        q_out, f_out = split.evaluate(x, t, sources)
    return x, conv, q_out, f_out, jac


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
                nonfinite = work.bound.nonfinite(x_new, t_new, design_ids=gid)
                raise ConvergenceError(f"transient: {nonfinite}" if nonfinite else
                                       f"transient: time step too small at t={float(t[k]):.6g} s "
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
