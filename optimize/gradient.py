"""Gradient search over a task's free parameters: multi-start Adam, then L-BFGS on the best start.

Free parameters live in unconstrained variables z with u = sigmoid(z) in the unit cube, mapped to SI
by `ParamSpace.from_unit` (log parameters in log space), so every iterate is inside the bounds and a
bound-limited optimum shows up as u -> 0 or 1.  Before the descent, a prescreen evaluates the corners
of the free box and a scrambled-Sobol set in one no-grad batch: its best designs are the starts, and
its spread is an estimate of the achievable range of the measurement.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from optimize.evaluators import Evaluator
from optimize.tasks import Task

__all__ = ["SearchResult", "finite_range", "gradient_search", "prescreen_designs", "U_CLAMP"]

#: starts are pulled this far inside the unit cube (sigmoid saturates at the bounds)
U_CLAMP = 0.02


@dataclass
class SearchResult:
    """Best design found by a search, with its predicted measurement and the search's cost."""

    design: Tensor                     # (P,) full design in SI
    u_free: Tensor                     # (F,) free parameters in the unit cube
    value: float                       # measurement predicted by the search's evaluator
    objective: float
    rel_error: float
    calls: int                         # designs simulated by the search's evaluator
    wall_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    range: tuple[float, float] | None = None   # achievable range estimated from what was evaluated
    converged: bool = False            # stopped on tolerance (not on budget or stall)
    values: Tensor | None = None       # (M,) every measurement of the objective at the design
    extra: dict[str, Any] = field(default_factory=dict)


def prescreen_designs(n_free: int, n: int, seed: int = 0, dtype=torch.float64) -> Tensor:
    """Unit-cube points (N, F): the 2^F corners of the free box (F <= 10) then n scrambled-Sobol points."""
    parts = []
    if n_free <= 10:
        parts.append(torch.tensor(list(itertools.product([0.0, 1.0], repeat=n_free)), dtype=dtype))
    if n > 0:
        parts.append(torch.quasirandom.SobolEngine(n_free, scramble=True, seed=seed).draw(n, dtype=dtype))
    return torch.cat(parts) if parts else torch.zeros(0, n_free, dtype=dtype)


def finite_range(values: Tensor) -> tuple[float, float] | None:
    """(min, max) of the finite entries of a 1-D tensor, or None if there are none."""
    v = values[torch.isfinite(values)]
    return (float(v.min()), float(v.max())) if v.numel() else None


def gradient_search(task: Task, evaluator: Evaluator, *, prescreen: int = 256, starts: int = 8, seed: int = 0,
                    adam_steps: int = 300, lr: float = 0.1, lbfgs_steps: int = 20, stop_fraction: float = 0.1,
                    patience: int = 40, progress: bool = False, init_u: Tensor | None = None) -> SearchResult:
    """Minimise the task's objective with gradients from ``evaluator`` (surrogate or reference solver).

    Stops when the best start's |relative error| <= ``stop_fraction * task.tolerance`` (only when the
    objective has no penalties), when the best objective has not improved by 1e-4 relatively for
    ``patience`` Adam steps, or when the budgets are spent.  ``init_u`` (N, F): warm starts in the
    unit cube, evaluated together with the prescreen (which may then be 0).
    """
    t_start = time.perf_counter()
    calls0 = evaluator.calls
    obj = task.objective
    meas = obj.measurements()
    stop_rel = stop_fraction * task.tolerance
    history: list[dict[str, float]] = []

    # 1. prescreen: corners + Sobol in one no-grad batch -> starts and the achievable range
    U = prescreen_designs(len(task.free), prescreen, seed=seed) if prescreen > 0 else \
        torch.zeros(0, len(task.free), dtype=torch.float64)
    if init_u is not None:
        U = torch.cat([init_u.detach().reshape(-1, len(task.free)).to(U.dtype), U])
    with torch.no_grad():
        P0 = task.designs(U)
        vals0 = evaluator.measure(P0, meas)
        J0 = obj(P0, vals0)
    rng = finite_range(vals0[:, 0])
    order = torch.argsort(J0)
    u_start = U[order[:max(1, starts)]].clamp(U_CLAMP, 1 - U_CLAMP)
    best = {"J": float(J0[order[0]]), "u": U[order[0]].clone(), "value": float(vals0[order[0], 0]),
            "values": vals0[order[0]].clone()}
    history.append({"step": 0, "phase": "prescreen", "objective": best["J"],
                    "rel_error": float(obj.rel_error(best["value"]))})

    def done() -> bool:
        return (not obj.has_penalties) and abs(obj.rel_error(best["value"])) <= stop_rel

    def consider(u: Tensor, J: Tensor, values: Tensor) -> None:
        k = int(torch.argmin(J))
        if float(J[k]) < best["J"]:
            best.update(J=float(J[k]), u=u[k].detach().clone(), value=float(values[k, 0]),
                        values=values[k].detach().clone())

    def objective_at(z: Tensor) -> Tensor:
        """J (B,) at unconstrained z (u = sigmoid(z)); keeps the best design seen."""
        u = torch.sigmoid(z)
        P = task.designs(u)
        values = evaluator.measure(P, meas)
        J = obj(P, values)
        consider(u, J.detach(), values.detach())
        return J

    converged = done()
    # 2. Adam on all starts at once (the batch is independent: the sum's gradient is per start)
    if adam_steps > 0 and not converged:
        z = torch.logit(u_start).clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        last_improve, ref_J = 0, best["J"]
        bar = _bar(adam_steps, progress, f"gradient {task.name}")
        for step in range(1, adam_steps + 1):
            opt.zero_grad()
            J = objective_at(z)
            J.sum().backward()
            opt.step()
            history.append({"step": step, "phase": "adam", "objective": best["J"],
                            "rel_error": float(obj.rel_error(best["value"]))})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(rel_err=f"{history[-1]['rel_error']:+.2e}")
            if best["J"] < ref_J * (1 - 1e-4):
                last_improve, ref_J = step, best["J"]
            if done():
                converged = True
                break
            if step - last_improve >= patience:
                break
        if bar is not None:
            bar.close()

    # 3. L-BFGS from the best design so far
    if lbfgs_steps > 0 and not converged:
        z = torch.logit(best["u"].clamp(1e-12, 1 - 1e-12)).unsqueeze(0).clone().requires_grad_(True)
        lbfgs = torch.optim.LBFGS([z], lr=1.0, max_iter=lbfgs_steps, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-14, tolerance_change=1e-16)
        bar = _bar(lbfgs.defaults["max_eval"], progress, f"L-BFGS {task.name}")

        def closure() -> Tensor:
            lbfgs.zero_grad()
            J = objective_at(z)
            history.append({"step": len(history), "phase": "lbfgs", "objective": best["J"],
                            "rel_error": float(obj.rel_error(best["value"]))})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(rel_err=f"{history[-1]['rel_error']:+.2e}")
            if not done():  # no gradient (zeros) once within tolerance: L-BFGS stops there
                J.sum().backward()
            return J.sum().detach()

        lbfgs.step(closure)
        if bar is not None:
            bar.close()
        converged = done()

    u_best = best["u"]
    design = task.designs(u_best.unsqueeze(0))[0].detach()
    value = best["value"]
    if rng is not None and math.isfinite(value):
        rng = (min(rng[0], value), max(rng[1], value))
    return SearchResult(design=design, u_free=u_best, value=value, objective=best["J"],
                        rel_error=float(obj.rel_error(value)), calls=evaluator.calls - calls0,
                        wall_s=time.perf_counter() - t_start, history=history, range=rng, converged=converged,
                        values=best["values"])


def _bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)
