"""Junction and gate voltage limiting inside Newton, as ngspice does it (devsup.c's pnjlim, fetlim).

A device family that declares `Device.limits` is linearised in each Newton iteration not at the
iterate's own local unknowns u but at ``u_lim = device.limit(u, u_old)``, where u_old is where it
was linearised in the previous iteration; its rows are ngspice's companion model at u_lim,
``F(u_lim) + dF/du (u - u_lim)`` (charges likewise).  An iteration that limited anything does not
count as converged.  One `Limiter` holds that memory for one Newton solve.

A solve that starts from the devices' starting voltages (``start``) also reproduces ngspice's
``off`` (niiter.c's MODEINITJCT then MODEINITFIX): instances whose parameter ``off`` is set stay
linearised at their `Device.off_point` (junction voltages 0) and do not count as limited until
the Newton converges; `Limiter.settle` then releases them and the solve goes on (MODEINITFLOAT),
limiting them from that point.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from circuits.devices.base import Device, DeviceEval, local_rows

__all__ = ["Limiter", "limited_rows", "limited_eval"]


class Limiter:
    """Where each limiting device group was last linearised, for one Newton solve.

    start: the first linearisation uses the devices' DC starting voltages (`Device.limit_start`,
    ngspice's MODEINITJCT); otherwise it is at the first iterate itself.
    enabled: while False, calls only record the iterate as the linearisation point (no limit
    functions run); a caller that knows its iterates moved little skips their cost this way.
    """

    def __init__(self, start: bool = False):
        self.start = start
        self.enabled = True
        self.used: dict[int, tuple[Tensor, bool]] = {}  # group -> (linearisation point, limited)
        self.active = False  # some instance was limited since the last `begin`
        self.rows: Tensor | None = None  # (B,) bool: the designs (batch rows) limited since the last `begin`
        self._frozen = False
        self.holding_off = start  # off instances held at their off point (MODEINITJCT/INITFIX)
        self.held = False  # some instance was held off

    def settle(self) -> bool:
        """The Newton converged: True to stop, False when off instances were held until now (they
        are released and the Newton must go on, as ngspice's MODEINITFIX -> MODEINITFLOAT)."""
        if self.holding_off and self.held:
            self.holding_off = False
            return False
        self.holding_off = False
        return True

    def begin(self) -> None:
        """A new Newton iteration: forget whether the previous one limited."""
        self.active = False
        self.rows = None

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Within: linearise at the points the last call chose (a Jacobian at the same iterate)."""
        self._frozen = True
        try:
            yield
        finally:
            self._frozen = False

    def __call__(self, key: object, device: Device, u: Tensor, p: dict, ctx) -> Tensor | None:
        """The local unknowns to linearise group `key` at, or None where that is u itself."""
        k = id(key)
        old, was_limited = self.used.get(k, (None, False))
        if self._frozen and old is not None and old.shape == u.shape:
            return old if was_limited else None
        if not self.enabled and not self.holding_off:
            self.used[k] = (u, False)
            return None
        off = p.get("off") if self.holding_off else None
        held = None
        if off is not None and bool((off != 0).any()):
            held = (off != 0).unsqueeze(-1).expand_as(u)
            self.held = True
        if old is None or old.shape != u.shape:
            u_lim = device.limit_start(u, p, ctx) if self.start else u
        else:  # held instances are not limited (their own old point is u), so never count as limited
            u_lim = device.limit(u, old if held is None else torch.where(held, u, old), p, ctx)
        counted = u_lim is not u and not torch.equal(u_lim, u)
        if counted:  # which designs: u is (B, ...), one batch row per design
            rows = (u_lim != u).reshape(u.shape[0], -1).any(dim=1)
            self.rows = rows if self.rows is None else self.rows | rows
        if held is not None:
            u_lim = torch.where(held, device.off_point(u, p, ctx), u_lim)
        moved = u_lim is not u and not torch.equal(u_lim, u)
        self.used[k] = (u_lim if moved else u, moved)
        self.active = self.active or counted
        return u_lim if moved else None

    def arrays(self, key: object, u: np.ndarray, limit: Callable[[np.ndarray, np.ndarray], np.ndarray]
               ) -> np.ndarray | None:
        """`__call__` on one design's numpy local unknowns in a Newton without a start point or off
        instances (a transient step); limit(u, u_old) is the device's `Device.limit` (u itself where
        it limits nothing)."""
        assert not (self.start or self.holding_off or self._frozen)
        k = id(key)
        old = self.used.get(k, (None, False))[0]
        u_lim = u if old is None or old.shape != u.shape else limit(u, old.numpy())
        moved = u_lim is not u and not np.array_equal(u_lim, u)
        self.used[k] = (torch.from_numpy(u_lim if moved else u), moved)
        self.active = self.active or moved
        return u_lim if moved else None

    def linearised_at(self, key: object) -> Tensor | None:
        """Where the last iteration linearised group `key` if it limited it there, else None (what
        a frozen call returns)."""
        old, was_limited = self.used.get(id(key), (None, False))
        return old if was_limited else None


def limited_rows(device: Device, v: Tensor, s: Tensor, t: Tensor, p: dict, ctx, u_lim: Tensor
                 ) -> tuple[DeviceEval, Tensor, Tensor, Tensor, Tensor]:
    """(evaluation at u_lim, F, Q, dF/du, dQ/du): the device linearised at u_lim, its local rows at
    u = [v, s] (ngspice's companion model at the limited voltages)."""
    n_term = v.shape[-1]
    v_lim, s_lim = u_lim[..., :n_term], u_lim[..., n_term:]
    out, jf, jq = device.local_jacobian(v_lim, s_lim, t, p, ctx)
    F, Q = local_rows(out, v_lim, s_lim)
    du = (torch.cat([v, s], dim=-1) - u_lim).unsqueeze(-1)
    return out, F + (jf @ du).squeeze(-1), Q + (jq @ du).squeeze(-1), jf, jq


def limited_eval(device: Device, v: Tensor, s: Tensor, t: Tensor, p: dict, ctx, u_lim: Tensor) -> DeviceEval:
    """`limited_rows` as a DeviceEval (entries None where the device has none)."""
    out, F, Q, _, _ = limited_rows(device, v, s, t, p, ctx, u_lim)
    n_term = v.shape[-1]
    return DeviceEval(i=None if out.i is None else F[..., :n_term], q=None if out.q is None else Q[..., :n_term],
                      fs=None if out.fs is None else F[..., n_term:], qs=None if out.qs is None else Q[..., n_term:])
