"""One design's nonlinear device groups evaluated on numpy (the Newton of `circuits.dense`).

Each group's `Device.evaluate`, `Device.limit` and `Device.local_jacobian` run as numpy traces
(`circuits.numpy_trace`): torch's results bit for bit (`SplitDAE.nonlinear_terms`,
`SplitDAE.jacobians`), without torch's per-op dispatch.  Where an instance is limited, its companion
model (`circuits.limiting.limited_rows`) is computed in torch.
"""

from __future__ import annotations

import numpy as np
import torch

from circuits.devices.base import DeviceEval
from circuits.limiting import Limiter, limited_eval, limited_rows
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
            jacobian = Traced(lambda v, s, t, dev=dev, p=p, ctx=ctx: dev.local_jacobian(v, s, t, p, ctx)[1:],
                              ("v", "s", "t"))
            self.groups.append((g, p, ctx, g.node_idx.numpy(), g.state_idx.numpy(), evaluate, limit, jacobian))
        # rows of the currents and charges in evaluation order; row n (ground) is dropped
        self.f_index, self.q_index = split._f_index.numpy(), split._q_index.numpy()
        # positions of the local Jacobian blocks in the flattened (n + 1) x (n + 1) matrices
        self.pairs = np.concatenate([g.pair_index(self.n + 1).numpy() for g, *_ in self.groups])

    def terms(self, x: np.ndarray, t: float, limiter: Limiter | None = None
              ) -> tuple[np.ndarray | None, np.ndarray]:
        """(q_nl or None when no device stores charge, f_nl) (n,) at x and t."""
        t_arr, x_ext = np.array([t]), np.append(x, 0.0)
        f_parts, q_parts = [], []
        with torch.inference_mode():
            for g, p, ctx, node_idx, state_idx, evaluate, limit, _ in self.groups:
                v, s = x_ext[node_idx][None], x[state_idx][None]
                u_lim = limiter.arrays(g, np.concatenate([v, s], -1), limit) if limiter and limit else None
                if u_lim is None:
                    i, q, fs, qs = evaluate(v, s, t_arr)
                else:
                    out = limited_eval(g.device, torch.from_numpy(v), torch.from_numpy(s),
                                       torch.from_numpy(t_arr), p, ctx, torch.from_numpy(u_lim))
                    i, q, fs, qs = (None if a is None else a.numpy() for a in _terms(out))
                f_parts += [a.reshape(-1) for a in (i, fs) if a is not None]
                q_parts += [a.reshape(-1) for a in (q, qs) if a is not None]
        size = self.n + 1
        f = np.bincount(self.f_index, np.concatenate(f_parts), minlength=size)[:self.n]
        q = np.bincount(self.q_index, np.concatenate(q_parts), minlength=size)[:self.n] if q_parts else None
        return q, f

    def jacobians(self, x: np.ndarray, t: float, limiter: Limiter | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(dq_nl/dx, df_nl/dx) (n, n) at x and t; with a limiter, the groups it limited in its last
        iteration are linearised where it did (as a frozen `Limiter` call)."""
        t_arr, x_ext = np.array([t]), np.append(x, 0.0)
        jf_parts, jq_parts = [], []
        with torch.inference_mode():
            for g, p, ctx, node_idx, state_idx, _, limit, jacobian in self.groups:
                v, s = x_ext[node_idx][None], x[state_idx][None]
                u_lim = limiter.linearised_at(g) if limiter and limit else None
                if u_lim is None:
                    jf, jq = jacobian(v, s, t_arr)
                else:
                    *_, jf, jq = limited_rows(g.device, torch.from_numpy(v), torch.from_numpy(s),
                                              torch.from_numpy(t_arr), p, ctx, u_lim)
                    jf, jq = jf.numpy(), jq.numpy()
                jf_parts.append(jf.reshape(-1))
                jq_parts.append(jq.reshape(-1))
        width = self.n + 1
        jq, jf = (np.bincount(self.pairs, np.concatenate(parts), minlength=width * width)
                  .reshape(width, width)[:self.n, :self.n] for parts in (jq_parts, jf_parts))
        return jq, jf
