"""One design's transient system in numpy (no-grad fast path of the shared-steps loop).

For one design every torch op costs its full dispatch overhead (~5 us) on a tiny (1, n) tensor,
and a time step took ~50 of them.  Here the linear devices are constant numpy matrices (from
`SplitDAE`), the sources come from a `SourceTable`, LU factors are reused while the matrix is
unchanged (a linear circuit refactors only when the step changes), and the nonlinear devices are
evaluated once per Newton iteration, and their Jacobians, as numpy traces of their torch code
(`circuits.dense_devices`; the DC operating point's Newton, which limits from start voltages, stays
in torch).  A linear circuit's step is one exact solve.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg import lapack
from torch import Tensor

from circuits.dae import BoundDAE
from circuits.dc import DC_MAX_ITER, current_columns, held_rows
from circuits.dense_devices import NumpyDevices
from circuits.limiting import Limiter
from circuits.integrator import CHORD_MAX_CONTRACTION, error_left_per_update
from circuits.source_table import SourceTable
from circuits.split import SplitDAE

__all__ = ["DenseSystem"]

NEWTON_MAX_ITER = 25


class DenseSystem:
    """a q(x) + b + f(x, t) = 0 for one design, solved with numpy/LAPACK."""

    def __init__(self, bound: BoundDAE, edges: list[float], sources: SourceTable | None = None):
        """bound: one design (B = 1); edges: 0, the breakpoints and tstop (the source table's segments);
        sources: a table built for the same design and edges to reuse (a switch's state, folded into
        the matrices, changes no source term)."""
        split = SplitDAE(bound)
        self.split = split
        self.edges = edges
        self.C = split.C[0].numpy().copy()
        self.G = split.G[0].numpy().copy()
        self.q0 = None if split.q0 is None else split.q0[0].numpy().copy()
        self.sources = sources if sources is not None and sources.serves(split, edges) else SourceTable(split, edges)
        self.nonlinear = bool(split.nonlinear)
        self.devices = NumpyDevices(split) if self.nonlinear else None
        self.limiting = any(g.device.limits for g, *_ in split._groups)  # Newton limits junctions
        self.has_charges = split.has_charges
        self._jac: tuple[np.ndarray, np.ndarray] | None = None
        self._lu_key = None
        self._lu = None
        self._solution: tuple[np.ndarray, np.ndarray] | None = None  # (x, q(x)) of the last Newton
        self._t = np.zeros(1)
        self._t_torch = torch.from_numpy(self._t)
        self.jacobians = 0  # Jacobian evaluations (statistics)
        self.iterations = 0

    def _torch(self, x: np.ndarray, t: float) -> tuple[Tensor, Tensor]:
        self._t[0] = t  # a view of self._t_torch (torch.tensor([t]) costs ~10 us)
        return torch.from_numpy(x)[None], self._t_torch

    def _nonlinear_terms(self, x: np.ndarray, t: float, limiter: Limiter | None = None):
        return self.devices.terms(x, t, limiter)

    def _refresh(self, x: np.ndarray, t: float, limiter: Limiter | None = None) -> None:
        """The Jacobian at x (with a limiter: where its last evaluation linearised the devices)."""
        jq, jf = self.devices.jacobians(x, t, limiter)
        # column-major as `SplitDAE.jacobians` gives them: products with them round alike
        self._jac = (np.add(self.C, jq, order="F"), np.add(self.G, jf, order="F"))
        self.jacobians += 1

    def _factor(self, a: float):
        """LU of -(a dq/dx + df/dx) (the current Jacobian; negated, so that a solve gives the Newton
        update's sign), reused while a and the Jacobian are unchanged; None when singular."""
        key = (a, self.jacobians)
        if key != self._lu_key:
            jq, jf = self._jac if self._jac is not None else (self.C, self.G)
            lu, piv, info = lapack.dgetrf(-a * jq - jf)
            self._lu = (lu, piv) if info == 0 else None
            self._lu_key = key
        return self._lu

    def charges(self, x: np.ndarray, t: float) -> np.ndarray:
        """q(x) (n,); at Newton's last solution, from its last evaluation (see `newton`)."""
        if self._solution is not None and x is self._solution[0]:
            return self._solution[1]
        q = self.C @ x
        if self.q0 is not None:
            q = q + self.q0
        if self.has_charges:
            q = q + self._nonlinear_terms(x, t)[0]
        return q

    def flow(self, x: np.ndarray, t: float) -> np.ndarray:
        """f(x, t) of dq/dt + f(x, t) = 0 (n,)."""
        f = self.G @ x + self.sources(t)
        if self.nonlinear:
            f = f + self._nonlinear_terms(x, t)[1]
        return f

    def operating_point(self, hold_values: Tensor, hold_mask: Tensor) -> Tensor | None:
        """DC solution at t = 0 by Newton with junction limiting, as `circuits.dc.operating_point` tries first
        (unknowns in hold_mask fixed to hold_values); None when it does not converge."""
        mask = hold_mask.numpy()
        values = hold_values[0].numpy()
        x = np.where(mask, values, 0.0)
        tol = self.split.bound.dae.atol.numpy() * 1e-2
        s0 = self.sources(0.0)
        current = current_columns(self.split.bound, len(self.split.bound.dae.node_names))
        limiter = Limiter(start=True)  # junction limiting from the devices' starting voltages
        # ngspice's Newton takes the full update and leaves the rest to the devices' limiting; a
        # circuit without limiting devices (B sources) caps the update at 1e3 V instead
        cap = math.inf if self.limiting else 1e3
        for _ in range(DC_MAX_ITER):
            f, J = self.G @ x + s0, self.G
            if self.nonlinear:
                limiter.begin()
                xt = self._torch(x, 0.0)
                with torch.no_grad():
                    f = f + self.split.nonlinear_terms(*xt, limiter)[1][0].numpy()
                    with limiter.frozen():
                        J = self.split.jacobians(*xt, limiter)[1][0].numpy()
            R, J = (v[0].numpy() for v in held_rows(
                torch.from_numpy(np.asarray(f))[None], torch.from_numpy(np.asarray(J))[None],
                torch.from_numpy(x)[None], hold_values, hold_mask, current))
            lu, piv, info = lapack.dgetrf(J)
            if info != 0 or not np.isfinite(R).all():
                return None
            dx, _ = lapack.dgetrs(lu, piv, R)
            size = np.abs(dx).max()
            x = x - (dx / size * cap if size > cap else dx)
            if not np.isfinite(x).all():
                return None
            if not limiter.active and (np.abs(dx) <= tol + 1e-9 * np.abs(x)).all() and limiter.settle():
                return torch.from_numpy(x)[None]
        return None

    def start(self, x: np.ndarray) -> np.ndarray:
        """Unknowns that appear in some charge (1.0) at x, t = 0; sets the first Jacobian."""
        if not self.nonlinear:
            return (np.abs(self.C).max(axis=0) > 0).astype(np.float64)
        self._refresh(x, 0.0)
        jq = self._jac[0]
        return (np.abs(jq).max(axis=0) > 0).astype(np.float64)

    def charge_rows(self, x: np.ndarray, t: float) -> np.ndarray:
        """1.0 for the equations in which some charge depends on the unknowns at x (else 0.0)."""
        jq = self.C
        if self.has_charges:
            jq = jq + self.devices.jacobians(x, t)[0]
        return (np.abs(jq).max(axis=1) > 0).astype(np.float64)

    def forget_jacobian(self) -> None:
        """Evaluate the Jacobian afresh at the next Newton call (after a failure)."""
        if self.nonlinear:
            self._jac = None
            self._lu_key = None

    def _known(self, t: float, a: float, b: np.ndarray) -> np.ndarray:
        """The residual's part that does not depend on x: b + s(t) + a q0."""
        rhs = b + self.sources(t)
        return rhs if self.q0 is None else rhs + a * self.q0

    def solve_linear(self, t: float, a: float, b: np.ndarray) -> tuple[np.ndarray, bool, int]:
        """A linear circuit's step: a (C x + q0) + b + G x + s(t) = 0 by one exact solve."""
        rhs = self._known(t, a, b)
        lu = self._lu if (a, self.jacobians) == self._lu_key else self._factor(a)
        self.iterations += 1
        if lu is None:
            return rhs, False, 1
        x, _ = lapack.dgetrs(lu[0], lu[1], rhs)
        return x, math.isfinite(x @ x), 1  # (x @ x: the cheapest finiteness check on ~10 values)

    def step_map(self, method, co) -> np.ndarray | None:
        """A linear circuit's step as one matrix W (3n, 3n+1): [x; q; qdot] at the new point is
        W @ [q; qdot; s; 1] of the last point's charges and charge derivative and the sources at the
        new point (`method`'s history and derivative; one exact solve per unit input)."""
        n = self.C.shape[0]
        lu = self._lu if (co.a, self.jacobians) == self._lu_key else self._factor(co.a)
        if lu is None:
            return None
        columns = []
        for u in np.eye(3 * n + 1):
            q1, qdot, s, one = u[:n], u[n:2 * n], u[2 * n:3 * n], u[3 * n]
            b = method.history(co, q1, None, qdot)
            rhs = b + s if self.q0 is None else b + s + co.a * one * self.q0
            x, _ = lapack.dgetrs(lu[0], lu[1], rhs)
            q = self.C @ x if self.q0 is None else self.C @ x + one * self.q0
            columns.append(np.concatenate([x, q, method.derivative(co, q, b)]))
        return np.stack(columns, axis=1)

    def newton(self, guess: np.ndarray, t: float, a: float, b: np.ndarray, tol: np.ndarray
               ) -> tuple[np.ndarray, bool, int]:
        """Solve a q(x) + b + f(x, t) = 0 from guess; converged when the update, or the error left
        after it (from the measured contraction), is within tol per unknown (as the per-design loop)."""
        rhs = self._known(t, a, b)
        if self._jac is None:
            self._refresh(guess, t)
        linear = a * self.C + self.G
        inv_tol = 1.0 / tol
        x, prev, left = guess, None, 1.0
        limiter = Limiter() if self.limiting else None
        for it in range(1, NEWTON_MAX_ITER + 1):
            if limiter is not None:
                limiter.begin()
            q_nl, f_nl = self._nonlinear_terms(x, t, limiter)
            limited = limiter is not None and limiter.active
            if limited:  # the Jacobian where the devices were linearised
                self._refresh(x, t, limiter)
                prev, left = None, 1.0
            lu = self._factor(a)
            if lu is None:
                return x, False, it
            R = linear @ x + rhs + f_nl
            if q_nl is not None:
                R = R + a * q_nl
            step, _ = lapack.dgetrs(lu[0], lu[1], R)  # = -dx
            self.iterations += 1
            size = float((np.abs(step) * inv_tol).max())
            if not math.isfinite(size):
                return x, False, it
            x = x + step
            if prev is not None:
                left = error_left_per_update(size / prev)
            if size * left <= 1.0 and not limited:
                if q_nl is not None:  # q at x to first order in the (converged, small) last update
                    q = self.C @ (x - step) + q_nl + self._jac[0] @ step
                    self._solution = (x, q if self.q0 is None else q + self.q0)
                return x, True, it
            if it % 10 == 0 or (prev is not None and size > CHORD_MAX_CONTRACTION * prev):
                self._refresh(x, t)  # stale Jacobian
                prev, left = None, 1.0
            else:
                prev = size
        return x, False, NEWTON_MAX_ITER
