"""A bound DAE with its linear devices folded into per-design matrices (no-grad solver fast path).

    q(x)    = C x + q_nl(x)
    f(x, t) = G x + s(t) + f_nl(x, t)

C and G collect every device whose `Device.linear` is true (R, C, L, V, I, E, G); s(t) is their
source term, constant unless one of them varies in time; q_nl and f_nl come from the remaining
(nonlinear) device groups only.  A Newton iteration then evaluates just the nonlinear devices, and
a time-dependent source term once per time step rather than once per iteration.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.dae import BoundDAE


def _matvec(M: Tensor, x: Tensor) -> Tensor:
    return torch.bmm(M, x.unsqueeze(-1)).squeeze(-1)


class SplitDAE:
    """`BoundDAE` split into constant linear matrices and nonlinear device groups (no autograd)."""

    def __init__(self, bound: BoundDAE):
        self.bound = bound
        groups = bound.dae.groups
        self.linear = [k for k, g in enumerate(groups) if g.device.linear]
        self.nonlinear = [k for k, g in enumerate(groups) if not g.device.linear]
        self.timed = [k for k in self.linear if groups[k].device.time_dependent(bound.ctxs[k])]
        B, n = bound.batch, bound.dae.size
        dtype = bound.designs.dtype
        zero_x = torch.zeros(B, n, dtype=dtype)
        with torch.no_grad():
            q0, f0, self.C, self.G = bound.jacobians(zero_x, torch.zeros(B, dtype=dtype), groups=self.linear)
            steady = [k for k in self.linear if k not in self.timed]
            # the constant part of s(t); the time-dependent groups are added per call
            _, self.s_const = bound.evaluate(zero_x, 0.0, groups=steady)
        self.q0 = q0  # charges of the linear devices at x = 0 (zero for R, C, L ...)
        self._zero_x = zero_x
        self._nl = [(groups[k], bound.params[k], bound.ctxs[k]) for k in self.nonlinear]
        self._scatter = self._scatter_indices(zero_x)

    @property
    def batch(self) -> int:
        """Number of designs B."""
        return self.bound.batch

    def sources(self, t: Tensor) -> Tensor:
        """s(t) (B, n): the linear devices' currents at x = 0; t is (B,)."""
        if not self.timed:
            return self.s_const
        _, f = self.bound.evaluate(self._zero_x, t, groups=self.timed)
        return self.s_const + f

    def _outputs(self, x: Tensor, t: Tensor):
        """Each nonlinear group's (i, q, fs, qs) at x (entries None where the device has none)."""
        x_ext = torch.nn.functional.pad(x, (0, 1))  # the ground node reads 0
        B = x.shape[0]
        for g, p, ctx in self._nl:
            v = x_ext.index_select(1, g.node_flat).view(B, *g.node_idx.shape)
            s = x.index_select(1, g.state_flat).view(B, *g.state_idx.shape)
            out = g.device.evaluate(v, s, t, p, ctx)
            yield out.i, out.q, out.fs, out.qs

    def _scatter_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of x that the nonlinear groups' currents and charges add to, in evaluation order
        (which outputs a device returns is fixed for a bound batch, so one probe finds them)."""
        f_idx, q_idx = [], []
        for (g, _, _), (i, q, fs, qs) in zip(self._nl, self._outputs(x, torch.zeros(x.shape[0], dtype=x.dtype))):
            for value, idx, dest in ((i, g.node_flat, f_idx), (q, g.node_flat, q_idx),
                                     (fs, g.state_flat, f_idx), (qs, g.state_flat, q_idx)):
                if value is not None:
                    dest.append(idx)
        cat = lambda idx: torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)  # noqa: E731
        return cat(f_idx), cat(q_idx)

    def evaluate(self, x: Tensor, t: Tensor, s: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(q, f) at x and t (B,), as `BoundDAE.evaluate`; s: `sources(t)` if already known."""
        s = self.sources(t) if s is None else s
        q = _matvec(self.C, x) + self.q0
        f = _matvec(self.G, x) + s
        if not self.nonlinear:
            return q, f
        B, n = x.shape
        f_parts, q_parts = [], []
        for i, qq, fs, qs in self._outputs(x, t):
            f_parts += [v.reshape(B, -1) for v in (i, fs) if v is not None]
            q_parts += [v.reshape(B, -1) for v in (qq, qs) if v is not None]
        f_idx, q_idx = self._scatter
        f = torch.nn.functional.pad(f, (0, 1)).index_add_(1, f_idx, torch.cat(f_parts, 1))[:, :n]
        if q_parts:
            q = torch.nn.functional.pad(q, (0, 1)).index_add_(1, q_idx, torch.cat(q_parts, 1))[:, :n]
        return q, f

    def jacobians(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(dq/dx, df/dx) (B, n, n) at x and t (B,)."""
        if not self.nonlinear:
            return self.C, self.G
        _, _, jq, jf = self.bound.jacobians(x, t, groups=self.nonlinear)
        return self.C + jq, self.G + jf
