"""Modified nodal analysis: assemble a `Circuit` into ``d q(x,p)/dt + f(x,t,p) = 0``.

Unknowns ``x`` are the node voltages (ground excluded) followed by every device's internal states
(voltage-source and inductor branch currents, ferroelectric polarisation, ...).  Elements are grouped
by device family so that one torch call evaluates all instances of a family for a whole batch of
designs; currents and charges are scattered into KCL rows with ``index_add``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

import circuits.devices  # noqa: F401  (registers the built-in devices)
from circuits.circuit import Circuit
from circuits.devices.base import Device, device_for_letter, device_for_model_type, local_rows
from circuits.errors import ConfigError, NetlistError
from circuits.expr import Expr
from circuits.limiting import Limiter, limited_eval, limited_rows
from circuits.netlist import Element

__all__ = ["CircuitDAE", "BoundDAE", "assemble"]

NODE_ATOL = 1e-6     # V: absolute tolerance scale of node voltages
CURRENT_ATOL = 1e-9  # A: absolute tolerance scale of branch currents


@dataclass
class Group:
    """All instances of one device family that share a torch call."""

    device: Device
    elements: list[Element]
    node_idx: Tensor            # (n_inst, n_terminals) into [x, ground]
    state_idx: Tensor           # (n_inst, n_states) into x
    param_exprs: dict[str, list[Expr | float]]

    def __post_init__(self) -> None:
        self.node_flat = self.node_idx.reshape(-1)
        self.state_flat = self.state_idx.reshape(-1)
        self.unknown_idx = torch.cat([self.node_idx, self.state_idx], dim=1)  # (n_inst, m)

    def pair_index(self, width: int) -> Tensor:
        """Flat (row, col) positions of the local Jacobian blocks in a (width x width) matrix."""
        u = self.unknown_idx
        return (u.unsqueeze(2) * width + u.unsqueeze(1)).reshape(-1)


@dataclass
class CircuitDAE:
    """Structure of the MNA system of a circuit; `bind` attaches a batch of designs."""

    circuit: Circuit
    node_names: list[str]
    state_names: list[str]            # output-style names: ``i(vdd)``, ``n1.p``
    groups: list[Group]
    atol: Tensor                      # (n,) absolute tolerance scale per unknown

    @property
    def size(self) -> int:
        """Number of unknowns."""
        return len(self.node_names) + len(self.state_names)

    @property
    def names(self) -> list[str]:
        """Output-style name of every unknown (``v(n1)`` ... then states)."""
        return [f"v({n})" for n in self.node_names] + self.state_names

    def index(self, output: str) -> int:
        """Position of an output name (``v(n1)``, ``i(vdd)``, ``n1.p``) in x."""
        try:
            return self.names.index(output.lower())
        except ValueError:
            raise KeyError(f"unknown output {output!r}; available: {', '.join(self.names)}") from None

    def bind(self, designs: Tensor | None = None, extra: Mapping[str, float] | None = None) -> "BoundDAE":
        """Evaluate all parameters for a (B, P) batch of designs (space order); differentiable."""
        circuit = self.circuit
        P = circuit.design_matrix(designs)
        overrides: dict[str, Any] = {k: float(v) for k, v in (extra or {}).items()}
        for k, name in enumerate(circuit.space.names):
            overrides[name] = P[:, k]
        env = circuit.netlist.resolve_params(overrides)
        B = P.shape[0]
        tran = {"tstep": circuit.tstep, "tstop": circuit.tstop}
        params, ctxs = [], []
        for g in self.groups:
            values = {}
            for name, exprs in g.param_exprs.items():
                raw = [e.evaluate(env) if isinstance(e, Expr) else e for e in exprs]
                if any(isinstance(v, Tensor) for v in raw):
                    values[name] = torch.stack([_as_batch(v, B, P) for v in raw], dim=-1)
                else:  # design-independent: a broadcast view, not B copies (binds per point are large)
                    row = torch.tensor([float(v) for v in raw], dtype=P.dtype, device=P.device)
                    values[name] = row.expand(B, -1)
            params.append(values)
            ctxs.append(g.device.prepare(g.elements, env, tran))
        return BoundDAE(self, P, params, ctxs, env, extra)


def _as_batch(value: Tensor | float, B: int, like: Tensor) -> Tensor:
    return torch.broadcast_to(torch.as_tensor(value, dtype=like.dtype, device=like.device), (B,))


@dataclass
class BoundDAE:
    """The DAE for a batch of B designs: `evaluate(x, t) -> (q, f)` with x of shape (B, n)."""

    dae: CircuitDAE
    designs: Tensor
    params: list[dict[str, Tensor]]
    ctxs: list[Any]
    env: dict[str, Any]
    extra: Mapping[str, float] | None = None

    @property
    def batch(self) -> int:
        """Number of designs B."""
        return self.designs.shape[0]

    def evaluate(self, x: Tensor, t: Tensor | float, groups: Sequence[int] | None = None,
                 limiter: Limiter | None = None, charged: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """Charges q(x) and currents f(x, t), both (B, n); t is a scalar or a (B,) tensor.

        groups: evaluate only these device groups (positions in ``dae.groups``); limiter: Newton's junction
        limiting (`circuits.limiting`; no autograd graph through limited devices); charged: a list that
        gets the positions of the groups that returned charges (the others add nothing to q).
        """
        B, n = x.shape
        t = t if isinstance(t, Tensor) else torch.as_tensor(t, dtype=x.dtype)
        x_ext = torch.cat([x, x.new_zeros(B, 1)], dim=1)
        f_parts, f_idx, q_parts, q_idx = [x.new_zeros(B, 0)], [torch.zeros(0, dtype=torch.long)], [], []
        for k, (g, p, ctx) in zip(range(len(self.dae.groups)) if groups is None else groups, self._selected(groups)):
            v, s = x_ext[:, g.node_idx], x[:, g.state_idx]
            u_lim = limiter(g, g.device, torch.cat([v, s], -1), p, ctx) if limiter and g.device.limits else None
            out = g.device.evaluate(v, s, t, p, ctx) if u_lim is None else limited_eval(g.device, v, s, t, p, ctx, u_lim)
            if charged is not None and (out.q is not None or out.qs is not None):
                charged.append(k)
            for value, idx, parts, idxs in ((out.i, g.node_flat, f_parts, f_idx),
                                            (out.q, g.node_flat, q_parts, q_idx),
                                            (out.fs, g.state_flat, f_parts, f_idx),
                                            (out.qs, g.state_flat, q_parts, q_idx)):
                if value is not None:
                    parts.append(value.reshape(B, -1))
                    idxs.append(idx)
        # one scatter per vector: every group's contributions at once
        f = x.new_zeros(B, n + 1).index_add(1, torch.cat(f_idx), torch.cat(f_parts, dim=1))
        if q_parts:
            q = x.new_zeros(B, n + 1).index_add(1, torch.cat(q_idx), torch.cat(q_parts, dim=1))
        else:
            q = x.new_zeros(B, n + 1)
        return q[:, :n], f[:, :n]

    def _selected(self, groups: Sequence[int] | None):
        triples = list(zip(self.dae.groups, self.params, self.ctxs))
        return triples if groups is None else [triples[k] for k in groups]

    def jacobians(self, x: Tensor, t: Tensor | float, groups: Sequence[int] | None = None,
                  limiter: Limiter | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(q, f, dq/dx, df/dx) with Jacobians (B, n, n), without autograd graph (groups, limiter:
        as in `evaluate`).

        Each device group returns the Jacobian of its own rows w.r.t. its own unknowns (analytic,
        or forward differences over its few terminals); the blocks are scattered into the global
        matrices.  (torch's forward-mode AD was measured 10-30x slower here: ops that mix a dual
        with a plain tensor or a Python scalar take a ~0.5 ms slow path in torch 2.13.)
        """
        B, n = x.shape
        t = t if isinstance(t, Tensor) else torch.as_tensor(t, dtype=x.dtype)
        x = x.detach()
        x_ext = torch.cat([x, x.new_zeros(B, 1)], dim=1)
        width = n + 1
        parts: dict[str, list[Tensor]] = {"f": [], "fi": [], "q": [], "qi": [], "jf": [], "jq": [], "ji": []}
        with torch.no_grad():
            for g, p, ctx in self._selected(groups):
                v, s = x_ext[:, g.node_idx], x[:, g.state_idx]
                u_lim = limiter(g, g.device, torch.cat([v, s], -1), p, ctx) if limiter and g.device.limits else None
                if u_lim is None:
                    out, jf, jq = g.device.local_jacobian(v, s, t, p, ctx)
                    F, Q = local_rows(out, v, s)
                else:
                    _, F, Q, jf, jq = limited_rows(g.device, v, s, t, p, ctx, u_lim)
                parts["f"].append(F.reshape(B, -1))
                parts["q"].append(Q.reshape(B, -1))
                parts["fi"].append(g.unknown_idx.reshape(-1))
                parts["jf"].append(jf.reshape(B, -1))
                parts["jq"].append(jq.reshape(B, -1))
                parts["ji"].append(g.pair_index(width))
            fi, ji = torch.cat(parts["fi"]), torch.cat(parts["ji"])
            f = x.new_zeros(B, width).index_add(1, fi, torch.cat(parts["f"], 1))[:, :n]
            q = x.new_zeros(B, width).index_add(1, fi, torch.cat(parts["q"], 1))[:, :n]
            jf = x.new_zeros(B, width * width).index_add(1, ji, torch.cat(parts["jf"], 1))
            jq = x.new_zeros(B, width * width).index_add(1, ji, torch.cat(parts["jq"], 1))
        return (q, f, jq.view(B, width, width)[:, :n, :n], jf.view(B, width, width)[:, :n, :n])

    def nonfinite(self, x: Tensor, t: Tensor | float, design_ids: Tensor | None = None) -> str:
        """Name what is NaN/inf at (x, t): the first device instance (and term) whose evaluation
        is not finite, or a non-finite unknown; '' when everything is finite.  For error messages.

        t: scalar or (B,); design_ids: the designs' numbers in the caller's batch (default 0..B-1)."""
        B = x.shape[0]
        x = x.detach()
        t = t if isinstance(t, Tensor) else torch.as_tensor(t, dtype=x.dtype)

        def at(b: int) -> str:
            tb = float(t.reshape(-1)[b if t.numel() > 1 else 0])
            return f"at t={tb:.6g} s, design {int(design_ids[b]) if design_ids is not None else b}"

        x_ext = torch.cat([x, x.new_zeros(B, 1)], dim=1)
        with torch.no_grad():
            for g, p, ctx in zip(self.dae.groups, self.params, self.ctxs):
                out = g.device.evaluate(x_ext[:, g.node_idx], x[:, g.state_idx], t, p, ctx)
                for term, value in (("current", out.i), ("charge", out.q), ("state equation", out.fs),
                                    ("state charge", out.qs)):
                    if value is None:
                        continue
                    value = value.reshape(B, len(g.elements), -1)
                    bad = ~torch.isfinite(value)
                    if bad.any():
                        b, k, j = bad.nonzero()[0].tolist()
                        el = g.elements[k]
                        model = f" (model {el.model})" if getattr(el, "model", None) else ""
                        others = int(bad.any(dim=2).any(dim=0).sum()) - 1
                        return (f"device {el.name}{model} returned a non-finite {term} "
                                f"({float(value[b, k, j])}) {at(b)}"
                                + (f" ({others} more instance(s) of its family too)" if others > 0 else ""))
        bad = ~torch.isfinite(x)
        if bad.any():
            b, k = bad.nonzero()[0].tolist()
            return f"unknown {self.dae.names[k]} is {float(x[b, k])} {at(b)}"
        return ""

    def initial_states(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(values, mask) of internal states that have a prescribed initial value (e.g. LK p0)."""
        B, n = x.shape
        values = x.new_zeros(B, n)
        mask = torch.zeros(n, dtype=torch.bool)
        x_ext = torch.cat([x, x.new_zeros(B, 1)], dim=1)
        for g, p in zip(self.dae.groups, self.params):
            s0 = g.device.initial_states(p, x_ext[:, g.node_idx])
            if s0 is not None and g.state_idx.numel():
                idx = g.state_idx.reshape(-1)
                values = values.index_copy(1, idx, s0.reshape(B, -1).to(x))
                mask[idx] = True
        return values, mask

    def uic_charge_offset(self, x: Tensor) -> Tensor | None:
        """(B, n) charges to add to q(x) at t = 0 under uic (C/L ``ic=``), or None when none is given;
        carries the graph to the parameters."""
        B, n = x.shape
        x_ext = torch.cat([x, x.new_zeros(B, 1)], dim=1)
        parts, idxs = [], []
        for g, p in zip(self.dae.groups, self.params):
            if "ic" not in p or not bool((~p["ic"].isnan()).any()):
                continue
            v, s = x_ext[:, g.node_idx], x[:, g.state_idx]
            start = g.device.uic_charges(v, s, p)
            if start is None:
                continue
            now = g.device.evaluate(v, s, torch.zeros((), dtype=x.dtype), p, None)
            for new, old, idx in ((start.q, now.q, g.node_flat), (start.qs, now.qs, g.state_flat)):
                if new is not None:
                    parts.append((new - old).reshape(B, -1))
                    idxs.append(idx)
        if not parts:
            return None
        return x.new_zeros(B, n + 1).index_add(1, torch.cat(idxs), torch.cat(parts, dim=1))[:, :n]

    def ic_values(self) -> tuple[Tensor, Tensor]:
        """(values (B, n), mask (n,)) of node voltages given by `.ic`."""
        dae = self.dae
        values = self.designs.new_zeros(self.batch, dae.size)
        mask = torch.zeros(dae.size, dtype=torch.bool)
        for node, expr in dae.circuit.netlist.ic.items():
            if node not in dae.node_names:
                continue
            k = dae.node_names.index(node)
            values[:, k] = _as_batch(expr.evaluate(self.env), self.batch, self.designs)
            mask[k] = True
        return values, mask

    def breakpoints(self) -> list[float]:
        """Union over the batch of all source corner times in (0, tstop)."""
        from circuits import waveforms

        return self._source_times(waveforms.breakpoints)

    def phase_points(self) -> list[float]:
        """Union of the quarter-period points of undamped SIN sources in (0, tstop) (no corners:
        candidate window edges for a periodic drive)."""
        from circuits import waveforms

        return self._source_times(waveforms.phase_points)

    def _source_times(self, finder: Callable[..., list[float]]) -> list[float]:
        """Sorted union of `finder(kind, args, tstep=, tstop=)` over every independent source's waveforms."""
        pts: set[float] = set()
        tran = self.dae.circuit
        for g, ctx in zip(self.dae.groups, self.ctxs):
            if g.device.independent_source:
                for kind, args in ctx[0]:
                    pts.update(finder(kind, args, tstep=tran.tstep, tstop=tran.tstop))
        return sorted(pts)


def _element_device(el: Element, circuit: Circuit) -> Device:
    netlist = circuit.netlist
    if el.model is not None:
        model = netlist.models.get(el.model)
        if model is None:
            raise NetlistError(f"unknown model '{el.model}'", el.loc.file, el.loc.line)
        dev = device_for_model_type(model.type)
        dev = dev.variant(model.params) if dev is not None else None
    else:
        dev = device_for_letter(el.kind)
    if dev is None:
        raise NetlistError(f"no device implements element '{el.name}'", el.loc.file, el.loc.line)
    return dev


def _param_exprs(dev: Device, el: Element, circuit: Circuit) -> dict[str, Expr | float]:
    """Each parameter of one element: instance value, else model value, else device default."""
    model = circuit.netlist.models[el.model].params if el.model else {}
    out: dict[str, Expr | float] = {}
    for name, default in {**dev.model_params, **dev.instance_params}.items():
        if name == "value" and el.value is not None:
            out[name] = el.value
        elif name in el.params:
            out[name] = el.params[name]
        elif name in model:
            out[name] = model[name]
        else:
            out[name] = float(default)
    if el.model:
        out.update(dev.model_type_params(circuit.netlist.models[el.model].type))
    return out


def _state_name(el: Element, state: str) -> str:
    return f"i({el.name})" if state == "i" else f"{el.name}.{state}"


def assemble(circuit: Circuit) -> CircuitDAE:
    """Build the MNA structure of a circuit (node/state numbering, device groups)."""
    elements = circuit.netlist.elements
    nodes: list[str] = []
    devices = [_element_device(el, circuit) for el in elements]
    for el, dev in zip(elements, devices):
        for n in dev.nodes_for(el):
            if n != "0" and n not in nodes:
                nodes.append(n)
    models = circuit.netlist.models
    states = [dev.states_for(el, models.get(el.model) if el.model else None) for el, dev in zip(elements, devices)]
    grouped: dict[Any, tuple[Device, list[Element], tuple[str, ...]]] = {}
    for el, dev, st in zip(elements, devices, states):
        key = (id(dev), el.name if dev.per_instance else st)
        grouped.setdefault(key, (dev, [], st))[1].append(el)

    n_nodes = len(nodes)
    ground = None  # index of the ground dump row, known once the states are counted
    state_names: list[str] = []
    state_atol: list[float] = []
    raw_groups = []
    for dev, els, st in grouped.values():
        node_rows, state_rows = [], []
        for el in els:
            node_rows.append([nodes.index(n) if n != "0" else -1 for n in dev.nodes_for(el)])
            rows = []
            for s in st:
                rows.append(n_nodes + len(state_names))
                state_names.append(_state_name(el, s))
                state_atol.append(CURRENT_ATOL if dev.is_current_state(s) else 1e-6)
            state_rows.append(rows)
        raw_groups.append((dev, els, node_rows, state_rows))
    ground = n_nodes + len(state_names)
    position = {name: n_nodes + k for k, name in enumerate(state_names)}
    for dev, els, node_rows, _ in raw_groups:
        for el, row in zip(els, node_rows):
            for ref in dev.references(el):
                if ref not in position:
                    raise NetlistError(f"{el.name}: '{ref}' is not a branch current", el.loc.file, el.loc.line)
                row.append(position[ref])
    groups = []
    for dev, els, node_rows, state_rows in raw_groups:
        node_idx = torch.tensor([[ground if k < 0 else k for k in row] for row in node_rows], dtype=torch.long)
        state_idx = torch.tensor(state_rows, dtype=torch.long).reshape(len(els), -1)
        per_inst = [_param_exprs(dev, el, circuit) for el in els]
        names = per_inst[0].keys()
        groups.append(Group(dev, els, node_idx, state_idx, {k: [pi[k] for pi in per_inst] for k in names}))
    for node in circuit.netlist.ic:
        if node not in nodes:
            el = elements[0]
            raise NetlistError(f".ic names unknown node '{node}'", el.loc.file, None)
    atol = torch.tensor([NODE_ATOL] * n_nodes + state_atol, dtype=torch.float64)
    dae = CircuitDAE(circuit, nodes, state_names, groups, atol)
    for out in circuit.outputs:
        try:
            dae.index(out)
        except KeyError as exc:
            raise ConfigError(f"circuit '{circuit.name}': {exc.args[0]}") from None
    return dae
