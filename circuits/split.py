"""A bound DAE with its linear devices folded into per-design matrices (no-grad solver fast path).

    q(x)    = C x + q0 + q_nl(x)
    f(x, t) = G x + s(t) + f_nl(x, t)

C and G collect every device whose `Device.linear` is true (R, C, L, V, I, E, G); s(t) is their
source term, constant unless one of them varies in time; q_nl and f_nl come from the remaining
(nonlinear) device groups only.  A Newton iteration then evaluates just the nonlinear devices, and
a time-dependent source term once per time step rather than once per iteration.

The per-design solver calls this ~10^4 times per transient on (B, n) tensors with B ~ 10^3, where
a tensor op costs ~5 us but a gather by index or a boolean op costs 10-40x more (measured, torch
2.13 CPU): terminal voltages are therefore gathered with a 0/1 matrix product.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.dae import BoundDAE
from circuits.limiting import Limiter, limited_eval


def matvec(M: Tensor, x: Tensor) -> Tensor:
    """Batched M x: (B, n, m) times (B, m) -> (B, n)."""
    return torch.bmm(M, x.unsqueeze(-1)).squeeze(-1)


def _selection(index: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """(n, k) 0/1 matrix whose column j picks unknown index[j] (the ground row n picks nothing)."""
    S = torch.zeros(n + 1, index.numel(), dtype=dtype)
    S[index, torch.arange(index.numel())] = 1.0
    return S[:n].contiguous()


def _affine_matrices(bound: BoundDAE, groups: list[int], zero_x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(q(0), dq/dx, df/dx) of affine device groups, column k from a unit step in unknown k
    (exact to rounding, unlike small-step differences next to a large source value)."""
    t0 = torch.zeros(zero_x.shape[0], dtype=zero_x.dtype)
    if zero_x.shape[0] == 1:  # one design: the n + 1 probes as rows of one call (parameters broadcast)
        n = zero_x.shape[1]
        probes = torch.cat([zero_x, torch.eye(n, dtype=zero_x.dtype)])
        q, f = bound.evaluate(probes, torch.zeros(n + 1, dtype=zero_x.dtype), groups=groups)
        return q[:1], (q[1:] - q[:1]).T[None], (f[1:] - f[:1]).T[None]
    q0, f0 = bound.evaluate(zero_x, t0, groups=groups)
    cols_q, cols_f = [], []
    for k in range(zero_x.shape[1]):
        unit = zero_x.clone()
        unit[:, k] = 1.0
        q, f = bound.evaluate(unit, t0, groups=groups)
        cols_q.append(q - q0)
        cols_f.append(f - f0)
    return q0, torch.stack(cols_q, dim=-1), torch.stack(cols_f, dim=-1)


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
            q0, self.C, self.G = _affine_matrices(bound, self.linear, zero_x)
            steady = [k for k in self.linear if k not in self.timed]
            # the constant part of s(t); the time-dependent groups are added per call
            _, self.s_const = bound.evaluate(zero_x, 0.0, groups=steady)
        self.q0 = q0 if bool((q0 != 0).any()) else None  # linear charges at x = 0 (none for R, C, L)
        self._zero_x = zero_x
        self._groups = []
        for k in self.nonlinear:
            g = groups[k]
            # terminal-major columns: each terminal's voltages come out contiguous (faster device math)
            select_v = _selection(g.node_idx.T.reshape(-1), n, dtype)
            # stateless devices get one empty (B, n_inst, 0) state tensor, made once
            select_s = (_selection(g.state_flat, n, dtype) if g.state_flat.numel()
                        else torch.zeros(B, *g.state_idx.shape, dtype=dtype))
            self._groups.append((g, bound.params[k], bound.ctxs[k], select_v, select_s))
        self._f_index, self._q_index = self._scatter_indices(zero_x)
        self.has_charges = self._q_index.numel() > 0  # some nonlinear device stores charge
        self.limits = any(groups[k].device.limits for k in self.nonlinear)  # junction limiting in Newton
        self.voltages = len(bound.dae.node_names)  # the first unknowns are node voltages

    def sources(self, t: Tensor) -> Tensor:
        """s(t) (B, n): the linear devices' currents at x = 0; t is (B,)."""
        if not self.timed:
            return self.s_const
        _, f = self.bound.evaluate(self._zero_x, t, groups=self.timed)
        return self.s_const + f

    def _outputs(self, x: Tensor, t: Tensor, limiter: Limiter | None = None):
        """Each nonlinear group's (i, q, fs, qs) at x (entries None where the device has none)."""
        B = x.shape[0]
        for g, p, ctx, select_v, select_s in self._groups:
            n_inst, n_term = g.node_idx.shape
            v = (x @ select_v).view(B, n_term, n_inst).transpose(1, 2)  # (B, n_inst, n_term)
            s = (x @ select_s).view(B, *g.state_idx.shape) if g.state_flat.numel() else select_s
            u_lim = limiter(g, g.device, torch.cat([v, s], -1), p, ctx) if limiter and g.device.limits else None
            out = g.device.evaluate(v, s, t, p, ctx) if u_lim is None else limited_eval(g.device, v, s, t, p, ctx, u_lim)
            yield out.i, out.q, out.fs, out.qs

    def _scatter_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Rows of x that the nonlinear groups' currents and charges add to, in evaluation order
        (which outputs a device returns is fixed for a bound batch, so one probe finds them)."""
        f_idx, q_idx = [], []
        t = torch.zeros(x.shape[0], dtype=x.dtype)
        for (g, *_), (i, q, fs, qs) in zip(self._groups, self._outputs(x, t)):
            for value, idx, dest in ((i, g.node_flat, f_idx), (q, g.node_flat, q_idx),
                                     (fs, g.state_flat, f_idx), (qs, g.state_flat, q_idx)):
                if value is not None:
                    dest.append(idx)
        cat = lambda idx: torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)  # noqa: E731
        return cat(f_idx), cat(q_idx)

    def nonlinear_terms(self, x: Tensor, t: Tensor, limiter: Limiter | None = None
                        ) -> tuple[Tensor | None, Tensor | None]:
        """(q_nl, f_nl) (B, n) of the nonlinear devices at x and t (B,); None where there are none
        (limiter: Newton's junction limiting, `circuits.limiting`)."""
        if not self._groups:
            return None, None
        B, n = x.shape
        f_parts, q_parts = [], []
        for i, q, fs, qs in self._outputs(x, t, limiter):
            f_parts += [v.reshape(B, -1) for v in (i, fs) if v is not None]
            q_parts += [v.reshape(B, -1) for v in (q, qs) if v is not None]

        def scatter(index: Tensor, parts: list[Tensor]) -> Tensor:
            values = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            return x.new_zeros(B, n + 1).index_add_(1, index, values)[:, :n]  # row n: ground

        return (scatter(self._q_index, q_parts) if q_parts else None,
                scatter(self._f_index, f_parts) if f_parts else None)

    def charges(self, x: Tensor, t: Tensor) -> Tensor:
        """q(x) (B, n); only the linear matrix product when no nonlinear device stores charge."""
        q = matvec(self.C, x)
        if self.q0 is not None:
            q = q + self.q0
        if self.has_charges:
            q = q + self.nonlinear_terms(x, t)[0]
        return q

    def evaluate(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(q, f) at x and t (B,), as `BoundDAE.evaluate`."""
        q_nl, f_nl = self.nonlinear_terms(x, t)
        q = matvec(self.C, x) + (self.q0 if self.q0 is not None else 0.0)
        f = matvec(self.G, x) + self.sources(t)
        return (q if q_nl is None else q + q_nl), (f if f_nl is None else f + f_nl)

    def jacobians(self, x: Tensor, t: Tensor, limiter: Limiter | None = None) -> tuple[Tensor, Tensor]:
        """(dq/dx, df/dx) (B, n, n) at x and t (B,) (limiter: as in `nonlinear_terms`)."""
        if not self.nonlinear:
            return self.C, self.G
        _, _, jq, jf = self.bound.jacobians(x, t, groups=self.nonlinear, limiter=limiter)
        return self.C + jq, self.G + jf
