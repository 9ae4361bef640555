"""One design's nonlinear device groups evaluated on numpy (the Newton of `circuits.dense`).

Each group's `Device.evaluate` and `Device.limit` run as numpy traces (`circuits.numpy_trace`):
the same arithmetic as the torch path (`SplitDAE.nonlinear_terms`) to rounding, without torch's
per-op dispatch.  In the iterations where an instance is limited, its companion model
(`circuits.limiting.limited_eval`) is computed in torch.
"""

from __future__ import annotations

import numpy as np
import torch

from circuits.devices.base import DeviceEval
from circuits.limiting import Limiter, limited_eval
from circuits.numpy_trace import Traced
from circuits.split import SplitDAE

__all__ = ["NumpyDevices"]


def _terms(out: DeviceEval) -> tuple:
    return out.i, out.q, out.fs, out.qs


class NumpyDevices:
    """(q_nl, f_nl) of a `SplitDAE`'s nonlinear groups at one design's numpy state."""

    def __init__(self, split: SplitDAE):
        self.n = split.bound.dae.size
        self.groups = []
        for g, p, ctx, _, _ in split._groups:
            dev = g.device
            evaluate = Traced(lambda v, s, t, dev=dev, p=p, ctx=ctx: _terms(dev.evaluate(v, s, t, p, ctx)),
                              ("v", "s", "t"))
            limit = (Traced(lambda u, u_old, dev=dev, p=p, ctx=ctx: dev.limit(u, u_old, p, ctx), ("u", "u_old"))
                     if dev.limits else None)
            self.groups.append((g, p, ctx, g.node_idx.numpy(), g.state_idx.numpy(), evaluate, limit))
        # rows of the currents and charges in evaluation order; row n (ground) is dropped
        self.f_index, self.q_index = split._f_index.numpy(), split._q_index.numpy()
        self._t = np.zeros(1)

    def terms(self, x: np.ndarray, t: float, limiter: Limiter | None = None
              ) -> tuple[np.ndarray | None, np.ndarray]:
        """(q_nl or None when no device stores charge, f_nl) (n,) at x and t."""
        self._t = np.array([t])
        x_ext = np.append(x, 0.0)
        f_parts, q_parts = [], []
        with torch.inference_mode():
            for g, p, ctx, node_idx, state_idx, evaluate, limit in self.groups:
                v, s = x_ext[node_idx][None], x[state_idx][None]
                u_lim = limiter.arrays(g, np.concatenate([v, s], -1), limit) if limiter and limit else None
                if u_lim is None:
                    i, q, fs, qs = evaluate(v, s, self._t)
                else:
                    out = limited_eval(g.device, torch.from_numpy(v), torch.from_numpy(s),
                                       torch.from_numpy(self._t), p, ctx, torch.from_numpy(u_lim))
                    i, q, fs, qs = (None if a is None else a.numpy() for a in _terms(out))
                f_parts += [a.reshape(-1) for a in (i, fs) if a is not None]
                q_parts += [a.reshape(-1) for a in (q, qs) if a is not None]
        size = self.n + 1
        f = np.bincount(self.f_index, np.concatenate(f_parts), minlength=size)[:self.n]
        q = np.bincount(self.q_index, np.concatenate(q_parts), minlength=size)[:self.n] if q_parts else None
        return q, f
