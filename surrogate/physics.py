"""What the PINN needs from a circuit: unknown layout, pinned nodes, scales, the DAE residual.

The residual of ``d q(x,p)/dt + f(x,t,p) = 0`` is evaluated at collocation points (t, p).  The time
derivative of the charges is ``dq/dt = (dq/dx) · dx/dt``; dx/dt comes from one forward-mode JVP
through the network, and the product with dq/dx is taken as a central directional difference of q
along dx/dt (exact for the linear charges of C, MOSFET overlap and ferroelectric devices), which
keeps torch's forward-mode AD out of the device code (mixing duals with plain tensors/scalars
takes a slow path there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from circuits.circuit import Circuit
from circuits.dae import BoundDAE, CircuitDAE
from circuits.discrete import discrete_elements
from circuits.errors import ConfigError
from circuits.simulation import dae_of, simulate_tensor
from circuits.solve import initial_condition

__all__ = ["CircuitPhysics", "Layout", "ROW_SCALES"]

#: how residual rows are scaled: |Jacobian|·x_scale (default), the size of their actual terms, or the
#: geometric mean of the two
ROW_SCALES = ("jacobian", "terms", "mixed")

#: a per-point row scale is at least this share of the layout's (rows whose terms all but vanish,
#: such as a reverse-biased diode's, still weigh their residual in the loss)
POINT_SCALE_FLOOR = 1e-3


@dataclass
class Layout:
    """Roles of the unknowns: pinned by a grounded voltage source, differential, or algebraic."""

    pinned: Tensor        # (n,) bool: node voltage equals a source value
    differential: Tensor  # (n,) bool: appears in some charge -> hard initial condition
    learned: Tensor       # (n,) bool: predicted by the network (not pinned, not a derived source current)
    x_scale: Tensor       # (n,) typical magnitude of each unknown
    row_scale: Tensor     # (n,) typical magnitude of each residual row
    # (n,) bool: device states that enter the equations linearly with constant coefficients and in no
    # charge (a diode's current without RS): solved from their own rows, not predicted
    solved: Tensor | None = None


class CircuitPhysics:
    """The circuit's DAE seen as a PINN loss; scales come from one reference run at nominal."""

    def __init__(self, circuit: Circuit, layout: Layout | None = None, row_scale: str = "jacobian"):
        if row_scale not in ROW_SCALES:
            raise ConfigError(f"row_scale must be one of {ROW_SCALES}, got {row_scale!r}")
        self.circuit = circuit
        self.dae: CircuitDAE = dae_of(circuit)
        self._grounded: list[tuple[int, int, float, int | None]] | None = None
        switches = discrete_elements(self.dae)
        if switches:  # the residual at (t, p) cannot know the state at the previous time point
            raise ConfigError(f"circuit '{circuit.name}': hysteretic switch(es) {', '.join(switches)} are not "
                              "supported by the PINN surrogate (their state depends on the previous time "
                              "point); simulate them with the reference solver or ngspice")
        self.tstop = circuit.tstop
        self.layout = layout if layout is not None else self._layout(row_scale)
        self._pinned_cache: tuple | None = None  # (t, designs, values, rates, extra) of the last call
        self._solved_columns: Tensor | None = None

    @property
    def names(self) -> list[str]:
        """Output-style names of all unknowns."""
        return self.dae.names

    def bind(self, P: Tensor) -> BoundDAE:
        """Bind a (N, P) matrix of designs (one per collocation point)."""
        return self.dae.bind(P)

    @property
    def grounded_sources(self) -> list[tuple[int, int, float, int | None]]:
        """(pinned node, branch-current state, sign, other terminal) for every voltage source whose
        other terminal is ground (other None) or a node pinned by an earlier source in the list
        (stacked sources, a floating input V1 between nodes 1 and 2 with V2 grounding 2).

        sign is +1 when the node is the source's + terminal: v(node) = v(other) + sign·V(t), and the
        source's branch current enters that node's KCL row with the same sign (the other's with -sign)."""
        if self._grounded is not None:
            return self._grounded
        ground = self.dae.size
        sources = [(row[0], row[1], state) for g in self.dae.groups if g.device.pins_voltage
                   for row, state in zip(g.node_idx.tolist(), g.state_idx[:, 0].tolist())]
        out, pinned = [], {ground}
        while True:  # grow the pinned set along chains of sources until nothing more is pinned
            added = False
            for plus, minus, state in sources:
                if plus in pinned and minus not in pinned:
                    out.append((minus, state, -1.0, None if plus == ground else plus))
                elif minus in pinned and plus not in pinned:
                    out.append((plus, state, 1.0, None if minus == ground else minus))
                else:
                    continue
                pinned.add(out[-1][0])
                added = True
            if not added:
                break
        self._grounded = out
        return out

    def _pinned_nodes(self) -> tuple[Tensor, Tensor]:
        """(pinned node mask, derived branch-current mask)."""
        pinned = torch.zeros(self.dae.size, dtype=torch.bool)
        derived = torch.zeros(self.dae.size, dtype=torch.bool)
        for node, state, _, _ in self.grounded_sources:
            pinned[node] = True
            derived[state] = True
        return pinned, derived

    def _layout(self, kind: str = "jacobian") -> Layout:
        circuit = self.circuit
        pinned, derived = self._pinned_nodes()
        with torch.no_grad():
            ref = simulate_tensor(circuit, None, rtol=1e-4)
            x = ref.x[0]  # (T, n)
            bound = self.dae.bind(None)
            # the network's states always hold the sources' values at pinned nodes; a `uic` start
            # vector does not (a supply node at 0 V forward-biases every PMOS bulk junction: ring5's
            # row scales were 1e8x off), so the scales are taken at the states the network sees
            x = torch.where(pinned, self.pinned_values(self.dae.bind(
                circuit.space.nominal_vector().unsqueeze(0).expand(x.shape[0], -1)), ref.t), x)
            x_scale = torch.clamp(x.abs().amax(dim=0), min=1e-12)
            # size of the terms of each row: |df/dx|·x_scale + |dq/dx|·x_scale / window, RMS over time
            stride = max(1, x.shape[0] // 64)
            sizes, jfs, jqs = [], [], []
            for k in range(0, x.shape[0], stride):
                _, _, jq, jf = bound.jacobians(x[k:k + 1], float(ref.t[k]))
                sizes.append((jf[0].abs() @ x_scale) + (jq[0].abs() @ x_scale) / self.tstop)
                jfs.append(jf[0])
                jqs.append(jq[0])
            row_scale = torch.sqrt(torch.stack(sizes).pow(2).mean(dim=0))
            # rows differ by many orders of magnitude in their own units (A for KCL, V/m for a
            # ferroelectric's state equation): no floor relative to the largest row, only for empty rows
            row_scale = torch.where(row_scale > 0, row_scale, torch.ones_like(row_scale))
            if kind in ("terms", "mixed"):
                terms = self._term_scale(ref.t, x)
                if kind == "mixed":  # geometric mean of the two
                    terms = torch.sqrt(terms * row_scale)
                # rows a construction satisfies exactly (source rows) have no terms: keep their scale
                row_scale = torch.where(terms > 1e-6 * row_scale, terms, row_scale)
            _, _, jq0, _ = bound.jacobians(x[:1], 0.0)
        differential = jq0[0].abs().amax(dim=0) > 0
        solved = self._linear_device_states(torch.stack(jfs), torch.stack(jqs)) & ~(pinned | derived)
        return Layout(pinned, differential & ~pinned, ~(pinned | derived | solved), x_scale, row_scale, solved)

    def _linear_device_states(self, jf: Tensor, jq: Tensor) -> Tensor:
        """(n,) bool: device states (not source currents) whose Jacobian column is the same at every
        sampled state (jf, jq: (S, n, n)), that appear in no charge, and that their own row contains.

        The network would have to learn such a state to the precision of its row, where a diode's
        exponential makes 0.1 V of error in the junction voltage 40x in current (the half-wave
        rectifier's window L-BFGS stalled at residual 0.77); solved from that row instead it is exact."""
        n = self.dae.size
        states = torch.zeros(n, dtype=torch.bool)
        for g in self.dae.groups:
            if not g.device.pins_voltage and g.state_idx.numel():
                states[g.state_idx.reshape(-1)] = True
        # 1e-6: device Jacobians may be forward differences; a diode with RS varies by g·RS ~ 1 when on
        column_fixed = (jf - jf[:1]).abs().amax(dim=(0, 1)) <= 1e-6 * jf.abs().amax(dim=(0, 1)).clamp(min=1e-300)
        no_charge = jq.abs().amax(dim=(0, 1)) == 0
        own_row = jf[0].diagonal() != 0
        solved = states & column_fixed & no_charge & own_row
        if bool(solved.any()):  # their own rows must determine them: the block is invertible
            block = jf[0][solved][:, solved]
            if torch.linalg.matrix_rank(block) < int(solved.sum()):
                return torch.zeros(n, dtype=torch.bool)
        return solved

    @property
    def solved_columns(self) -> Tensor | None:
        """(n, d) constant Jacobian columns of the solved states (None when there are none)."""
        solved = self.layout.solved
        if solved is None or not bool(solved.any()):
            return None
        if self._solved_columns is None:
            bound = self.dae.bind(None)
            x = torch.zeros(1, self.dae.size, dtype=torch.float64)
            _, _, _, jf = bound.jacobians(x, 0.0)
            self._solved_columns = jf[0][:, solved]
        return self._solved_columns

    def solve_states(self, rows: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The solved device states from their own rows (rows computed with them at 0): exact, as
        the rows are linear in them with constant coefficients.  Returns (x, rows) with them in."""
        columns = self.solved_columns
        if columns is None:
            return x, rows
        solved = self.layout.solved
        idx = torch.nonzero(solved).flatten()
        values = -torch.linalg.solve(columns[solved], rows[:, solved].T).T  # (N, d)
        return x.index_copy(1, idx, values), rows + values @ columns.T

    def complete(self, bound: BoundDAE, x: Tensor, xdot: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(x with the solved states and source currents, the rows they leave) at the points."""
        rows = self.rows(bound, x, xdot, t)
        x, rows = self.solve_states(rows, x)
        return self.fill_source_currents(rows, x)

    def point_row_scale(self, bound: BoundDAE, x: Tensor, t: Tensor) -> Tensor:
        """(N, n) each point's row scale from the size of the row's own terms: at that point, and
        as RMS over the points of the same design (floored at POINT_SCALE_FLOOR of the layout's).

        The design's own size, not the nominal design's, sets what a residual is worth: the
        rectifier's 40 mV design sat 25 mV off where the nominal scale made that invisible (window
        error 3.35 -> 0.074 with this floor on its first conducting half period)."""
        with torch.no_grad():
            size = torch.zeros_like(x)
            for k in range(len(self.dae.groups)):
                _, f = bound.evaluate(x.detach(), t, groups=[k])
                size += f.abs()
            _, design = torch.unique(bound.designs, dim=0, return_inverse=True)
            count = torch.bincount(design).to(x.dtype).unsqueeze(1)
            mean_square = torch.zeros(count.shape[0], x.shape[1], dtype=x.dtype).index_add(0, design, size.pow(2))
            own = (mean_square / count).sqrt()[design]
            floor = torch.maximum(own, POINT_SCALE_FLOOR * self.layout.row_scale)
            return torch.sqrt(floor.pow(2) + size.pow(2))

    def _term_scale(self, t: Tensor, x: Tensor, design: Tensor | None = None) -> Tensor:
        """RMS over the nominal run (time-weighted) of the size of each row's actual terms:
        Σ over devices of |their f in the row| + |dq/dt|.

        The Jacobian scale counts |∂f/∂x|·x_scale, which a pinned neighbour can make large even where
        the currents are small: FeRAM's cell node gets 6e-3 A from the access transistor's
        transconductance times the word-line swing, against 5e-5 A of actual switching current, so
        errors in v(fe) of 0.1 V were invisible in the loss.  `design`: (P,), nominal by default."""
        T = t.shape[0]
        design = self.circuit.space.nominal_vector() if design is None else design
        bound = self.dae.bind(design.unsqueeze(0).expand(T, -1))
        size = torch.zeros_like(x)
        for k in range(len(self.dae.groups)):
            _, f = bound.evaluate(x, t, groups=[k])
            size += f.abs()
        q, _ = bound.evaluate(x, t)
        size += torch.gradient(q, spacing=(t,), dim=0)[0].abs()
        weight = torch.gradient(t)[0].unsqueeze(1)  # trapezoid-like weights of the adaptive steps
        return torch.sqrt((size.pow(2) * weight).sum(dim=0) / weight.sum())

    def pinned_values(self, bound: BoundDAE, t: Tensor) -> Tensor:
        """(N, n) with the source value at pinned nodes (from the V rows evaluated at x = 0)."""
        N, n = bound.batch, self.dae.size
        with torch.no_grad():
            sources = [k for k, g in enumerate(self.dae.groups) if g.device.pins_voltage]
            _, f0 = bound.evaluate(torch.zeros(N, n, dtype=bound.designs.dtype), t, groups=sources)
        out = torch.zeros(N, n, dtype=bound.designs.dtype)
        for node, state, sign, other in self.grounded_sources:  # fs = v+ - v- - V(t) at x = 0
            out[:, node] = (0.0 if other is None else out[:, other]) - sign * f0[:, state]
        return out

    def pinned_with_rate(self, bound: BoundDAE, t: Tensor) -> tuple[Tensor, Tensor]:
        """`pinned_values` at t and their time derivative (central difference), both (N, n).

        The last result is kept: L-BFGS evaluates the same points thousands of times, and the
        three source evaluations were ~10 % of an amp L-BFGS step."""
        key = self._pinned_cache
        if key is not None and key[4] == bound.extra and torch.equal(key[0], t) and torch.equal(key[1], bound.designs):
            return key[2], key[3]
        delta = 1e-6 * self.tstop
        values = self.pinned_values(bound, t)
        rates = (self.pinned_values(bound, t + delta) - self.pinned_values(bound, t - delta)) / (2 * delta)
        self._pinned_cache = (t.detach().clone(), bound.designs.detach().clone(), values, rates, bound.extra)
        return values, rates

    def initial_state(self, bound: BoundDAE) -> Tensor:
        """x(0, p) for each design: `.ic`/uic values or the DC operating point, with its graph to p
        (the operating point's implicit-function sensitivity)."""
        return initial_condition(bound, self.circuit.uic)

    def rows(self, bound: BoundDAE, x: Tensor, xdot: Tensor, t: Tensor) -> Tensor:
        """Unscaled DAE rows dq/dt + f (N, n) at the points (x, xdot in SI units, t in seconds)."""
        # step along xdot small against every unknown's scale (exact for linear charges anyway)
        rate = (xdot.detach().abs() / self.layout.x_scale).amax(dim=1, keepdim=True)
        eps = 1e-4 / torch.clamp(rate, min=1e-30)
        charged: list[int] = []
        _, f = bound.evaluate(x, t, charged=charged)
        if not charged:
            return f
        # only the groups that hold charge (a level-1 MOSFET without capacitances has none: ring7's
        # evaluations were 27 % its currents' needless second and third passes)
        q_plus, _ = bound.evaluate(x + eps * xdot, t, groups=charged)
        q_minus, _ = bound.evaluate(x - eps * xdot, t, groups=charged)
        return (q_plus - q_minus) / (2 * eps) + f

    def fill_source_currents(self, rows: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Branch currents of grounded sources from their node's KCL (rows computed with them at 0).

        Returns (x with those currents, rows with the pinned-node rows thereby satisfied)."""
        for node, state, sign, other in reversed(self.grounded_sources):  # a chain's far end first
            current = -sign * rows[:, node]
            x = x.index_copy(1, torch.tensor([state]), current.unsqueeze(1))
            rows = rows.index_copy(1, torch.tensor([node]), torch.zeros_like(current).unsqueeze(1))
            if other is not None:  # the current leaves through the other terminal's KCL row
                rows = rows.index_add(1, torch.tensor([other]), (-sign * current).unsqueeze(1))
        return x, rows

    def residual(self, bound: BoundDAE, x: Tensor, xdot: Tensor, t: Tensor,
                 point_scale: Callable[[BoundDAE, Tensor, Tensor], Tensor] | None = None) -> Tensor:
        """Scaled residual (dq/dt + f) / row_scale; rows satisfied by construction are zero.
        `point_scale(bound, x, t)`: per-point row scales (N, n) from the completed states instead."""
        x, rows = self.complete(bound, x, xdot, t)
        return rows / (self.layout.row_scale if point_scale is None else point_scale(bound, x, t))
