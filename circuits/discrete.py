"""Devices with a discrete memory (hysteretic switches): what the transient loop asks of them.

A step's equations use the states of the last accepted point.  The loop (1) locates each switching
event: a step after which some state would change is retried until it ends just past the control's
threshold crossing; there the states change (`commit`), the step is solved again with them, and the
integrator restarts at first order (the conductance jumps), its first step checked against a
trapezoidal one from the derivative just after the switching (`circuits.solve`); (2) settles the DC
operating point: solved again while committing its solution changes a state (`settle`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from circuits.dae import BoundDAE, CircuitDAE

__all__ = ["discrete_elements", "has_discrete", "commit", "first_event", "snapshot", "restore", "settle", "event_fraction", "event_tolerance"]

SETTLE_ROUNDS = 20  # DC re-solves while the switches' states change


def _groups(bound: BoundDAE):
    for g, p, ctx in zip(bound.dae.groups, bound.params, bound.ctxs):
        if hasattr(g.device, "commit"):
            yield g, p, ctx


def discrete_elements(dae: CircuitDAE) -> list[str]:
    """Names of the elements whose devices keep a discrete memory."""
    return [el.name for g in dae.groups if hasattr(g.device, "commit") for el in g.elements]


def has_discrete(bound: BoundDAE) -> bool:
    """Whether any device of the circuit keeps a discrete memory."""
    return next(_groups(bound), None) is not None


def _local(g, x: Tensor) -> Tensor:
    x_ext = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
    return x_ext[:, g.node_idx]


def _batch(x) -> Tensor:
    """A state as a (B, n) tensor (the dense loop holds one design as a numpy (n,) array)."""
    return torch.from_numpy(np.asarray(x))[None] if not isinstance(x, Tensor) else x.detach()


def commit(bound: BoundDAE, x) -> bool:
    """Advance every discrete memory by its rule at the state x; whether some state changed."""
    x = _batch(x)
    changed = False
    with torch.no_grad():
        for g, p, ctx in _groups(bound):
            changed = g.device.commit(_local(g, x), p, ctx) or changed
    return changed


def snapshot(bound: BoundDAE) -> list:
    """The discrete memories' contents (for `restore`)."""
    return [ctx.previous for _, _, ctx in _groups(bound)]


def restore(bound: BoundDAE, saved: list) -> None:
    """Put back what `snapshot` returned."""
    for (_, _, ctx), previous in zip(_groups(bound), saved):
        ctx.previous = previous


def settle(bound: BoundDAE, x, solve: Callable[[], Tensor]) -> Tensor:
    """The DC operating point x with the states its controls give: solved again (``solve``) while
    committing the solution changes a state (ngspice iterates its DC Newton with the switches'
    states following the iterate); at most SETTLE_ROUNDS times."""
    for _ in range(SETTLE_ROUNDS):
        if not commit(bound, x):
            break
        x = solve()
    return x


def event_fraction(bound: BoundDAE, x_old, x_new) -> float | None:
    """The earliest fraction of the step x_old -> x_new at which some discrete state changes
    (linear estimate from the controls), or None when none changes."""
    x_old, x_new = _batch(x_old), _batch(x_new)
    first = float("inf")
    with torch.no_grad():
        for g, p, ctx in _groups(bound):
            first = min(first, float(g.device.crossing(_local(g, x_old), _local(g, x_new), p, ctx).min()))
    return None if first == float("inf") else first


def first_event(bound: BoundDAE, x_old, x_new) -> int | None:
    """The first k at which some discrete state changes over x_old[k] -> x_new[k] (consecutive
    steps as rows, (K, n)), or None."""
    x_old, x_new = torch.as_tensor(x_old), torch.as_tensor(x_new)
    hit = torch.zeros(x_new.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for g, p, ctx in _groups(bound):
            hit |= torch.isfinite(g.device.crossing(_local(g, x_old), _local(g, x_new), p, ctx)).any(dim=-1)
    return int(hit.nonzero()[0]) if bool(hit.any()) else None


def event_tolerance(tstep: float, tstop: float, hmin: float) -> float:
    """How close after the threshold crossing a switching step must end (s)."""
    return max(1e-6 * min(tstep, tstop / 50), 10 * hmin)
