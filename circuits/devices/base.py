"""Device interface and registry.

A device family is a small class whose `evaluate` is a pure torch function, vectorised over all
instances of the family (and over a leading batch of designs):

    v  (..., n_inst, n_terminals)  terminal voltages
    s  (..., n_inst, n_states)     internal states (branch currents, polarisation ...)
    t  (..., 1)                    time, broadcastable against the instance axis
    p  {name: (..., n_inst)}       model and instance parameters, merged

It returns `DeviceEval`: the current flowing *into* the device at each terminal (`i`), the charge
stored at each terminal (`q`), and the residual of each internal-state equation split the same way,
`d qs/dt + fs = 0`.  The assembler adds ``i`` and ``dq/dt`` to the KCL rows of the terminal nodes and
appends the state equations, so adding a device never touches the assembler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

__all__ = ["Device", "DeviceEval", "register", "device_for_letter", "device_for_model_type",
           "known_model_types", "two_terminal", "local_rows"]


@dataclass
class DeviceEval:
    """Terminal currents/charges and internal-state residual terms of one device family."""

    i: Tensor | None = None
    q: Tensor | None = None
    fs: Tensor | None = None
    qs: Tensor | None = None


class Device:
    """Base class of a device family; subclasses set the class attributes and `evaluate`."""

    letter: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    terminals: ClassVar[int | None] = 2
    states: ClassVar[tuple[str, ...]] = ()
    model_params: ClassVar[dict[str, float]] = {}
    instance_params: ClassVar[dict[str, float]] = {}
    rejected_params: ClassVar[dict[str, str]] = {}
    # model parameters accepted although not modelled, because they cannot change a transient here:
    # name -> the only value accepted (None: any value, e.g. a temperature coefficient at 27 C);
    # another value is rejected with rejected_params[name]
    inert_params: ClassVar[dict[str, float | None]] = {}
    family: ClassVar[str] = ""  # a name for messages (``MOSFET``)
    levels: ClassVar[tuple[int, ...]] = (1,)  # the ``level=`` values implemented (model_params has level)
    aliases: ClassVar[dict[str, str]] = {}  # other names ngspice accepts for a model parameter
    per_instance: ClassVar[bool] = False  # True: every element is its own group (B sources)
    # True: currents and charges are affine in the unknowns (time and parameters enter only the
    # constant term), so a solver may fold the device into constant matrices (see circuits.split)
    linear: ClassVar[bool] = False
    # True: evaluate broadcasts over extra leading axes (elementwise in the instances), so forward
    # differences may evaluate all perturbations in one call
    batched_differences: ClassVar[bool] = False
    # True: the device limits its junction/gate voltages between Newton iterations as ngspice does
    # (devsup.c's pnjlim, fetlim), through `limit` and `limit_start`
    limits: ClassVar[bool] = False
    # what a `.control` ``alter`` may set (ngspice's com_alter): ngspice's instance parameter name ->
    # the element's parameter (``value``: the element's value); the first is the parameter
    # ``alter dev value`` sets (ngspice's principal parameter)
    alter_params: ClassVar[dict[str, str]] = {}
    # True: an independent source, whose waveform's corners are breakpoints of the transient
    independent_source: ClassVar[bool] = False
    # True: the device's one state is a branch current that holds v(+) - v(-) at a given function of
    # time (an independent voltage source): a surrogate pins its node and solves the current from KCL
    pins_voltage: ClassVar[bool] = False

    def alter(self, element, param: str, values: list[float]):
        """The element with ngspice parameter ``param`` set to ``values`` (one number, or a vector),
        as ngspice's ``alter`` sets it before a transient; a string saying why not otherwise."""
        from dataclasses import replace

        from circuits.expr import Expr

        key = self.alter_params.get(param)
        if key is None:
            return f"parameter '{param}' cannot be altered (alterable: {', '.join(self.alter_params) or 'none'})"
        if len(values) != 1:
            return f"parameter '{param}' takes one value, got {len(values)}"
        if key == "value":
            return replace(element, value=Expr.const(values[0]))
        return replace(element, params={**element.params, key: Expr.const(values[0])})

    def evaluate(self, v: Tensor, s: Tensor, t: Tensor, p: dict[str, Tensor], ctx=None) -> DeviceEval:
        """Return currents, charges and state residual terms for all instances.

        ``ctx`` is whatever `prepare` returned for this group (None for most devices).
        """
        raise NotImplementedError

    def local_jacobian(self, v: Tensor, s: Tensor, t: Tensor, p: dict[str, Tensor], ctx=None
                       ) -> tuple[DeviceEval, Tensor, Tensor]:
        """(evaluation, dF/du, dQ/du) for the local unknowns u = [v, s], each block (..., n_inst, m, m).

        Local rows are [terminal currents, state residuals] (F) and [terminal charges, state
        charges] (Q).  Default: forward differences over the m local unknowns (exact to rounding for
        linear devices); nonlinear devices may override with analytic derivatives.
        """
        base = self.evaluate(v, s, t, p, ctx)
        u = torch.cat([v, s], dim=-1)
        n_term, m = v.shape[-1], u.shape[-1]
        floor = torch.ones(m, dtype=u.dtype, device=u.device)
        floor[n_term:] = 1e-3
        h = 1e-7 * torch.maximum(u.abs(), floor)
        F0, Q0 = local_rows(base, v, s)
        if self.batched_differences:
            # all m perturbed copies in one call on a leading axis: on CPU a tensor op costs about
            # the same for m copies as for one, so this is one evaluation instead of m
            up = u.unsqueeze(0) + (h.unsqueeze(-2) * torch.eye(m, dtype=u.dtype, device=u.device)).movedim(-2, 0)
            vp, sp = up[..., :n_term], up[..., n_term:]
            F, Q = local_rows(self.evaluate(vp, sp, t, p, ctx), vp, sp)
            step = h.movedim(-1, 0).unsqueeze(-1)
            return base, ((F - F0) / step).movedim(0, -1), ((Q - Q0) / step).movedim(0, -1)
        cols_f, cols_q = [], []
        for k in range(m):
            up = u.clone()
            up[..., k] += h[..., k]
            F, Q = local_rows(self.evaluate(up[..., :n_term], up[..., n_term:], t, p, ctx), v, s)
            cols_f.append((F - F0) / h[..., k:k + 1])
            cols_q.append((Q - Q0) / h[..., k:k + 1])
        return base, torch.stack(cols_f, dim=-1), torch.stack(cols_q, dim=-1)

    def limit(self, u: Tensor, u_old: Tensor, p: dict[str, Tensor], ctx=None) -> Tensor:
        """The local unknowns u = [v, s] (..., n_inst, m) to linearise at when a Newton iterate gives
        u and the last linearisation was at u_old (ngspice's junction/gate limiting); default u."""
        return u

    def limit_start(self, u: Tensor, p: dict[str, Tensor], ctx=None) -> Tensor:
        """The local unknowns of the DC Newton's first linearisation (ngspice's MODEINITJCT
        junction voltages); default u."""
        return u

    def off_point(self, u: Tensor, p: dict[str, Tensor], ctx=None) -> Tensor:
        """The linearisation point of an instance marked ``off``: every junction voltage 0, as
        ngspice's loads set them in MODEINITJCT and MODEINITFIX (families with ``off`` in
        instance_params implement this)."""
        raise NotImplementedError(f"{type(self).__name__} has no 'off'")

    def variant(self, params) -> "Device":
        """The device that implements a `.model` card with these parameters (name -> Expr): a family
        whose levels are separate models (MOSFET level 1, 2, 3, 6) returns that level's device."""
        return self

    def time_dependent(self, ctx) -> bool:
        """Whether the device's equations depend on time t (for a linear device: its source term)."""
        return False

    def prepare(self, elements: list, env: dict, tran: dict):
        """Per-group static context built once per design batch (source waveforms, B expressions)."""
        return None

    def model_type_params(self, model_type: str) -> dict[str, float]:
        """Constant parameters implied by the `.model` type (e.g. MOSFET polarity); merged into p."""
        return {}

    def nodes_for(self, element) -> list[str]:
        """The device terminals of an element (B sources add the nodes their expression reads)."""
        return list(element.nodes)

    def references(self, element) -> list[str]:
        """Other elements' unknowns the device reads after its terminals (output names, ``i(v1)``);
        the device's currents and charges at them add to those elements' state equations."""
        return [f"i({c})" for c in getattr(element, "controls", ())]

    def states_for(self, element, model=None) -> tuple[str, ...]:
        """Names of the element's internal states (model: its `.model` card, or None); elements of a
        family with different states are evaluated in separate groups."""
        return self.states

    @staticmethod
    def is_current_state(name: str) -> bool:
        """Whether a state is a current (``i``, ``i_c`` ...): it gets the current tolerance."""
        return name == "i" or name.startswith("i_")

    def initial_states(self, p: dict[str, Tensor], v: Tensor) -> Tensor | None:
        """Initial value of the internal states (held during the DC operating point), or None."""
        return None

    def uic_charges(self, v: Tensor, s: Tensor, p: dict[str, Tensor]) -> DeviceEval | None:
        """Charges (``q``, ``qs``) the device starts from under ``uic`` where they differ from its
        charges at the initial state (C/L ``ic=``), or None."""
        return None

    def state_scales(self, p: dict[str, Tensor]) -> Tensor | None:
        """Typical magnitude of each internal state (for tolerances); None means 1."""
        return None

    def ngspice_lines(self, name: str, nodes: list[str], model: dict[str, float],
                      inst: dict[str, float]) -> list[str]:
        """Equivalent ngspice netlist lines for one instance (Python devices only)."""
        raise NotImplementedError(f"{type(self).__name__} has no ngspice equivalent")

    @classmethod
    def param_names(cls) -> set[str]:
        """Every accepted model or instance parameter name."""
        return set(cls.model_params) | set(cls.instance_params)


_BY_LETTER: dict[str, Device] = {}
_BY_MODEL: dict[str, Device] = {}


def register(cls: type[Device]) -> type[Device]:
    """Class decorator: register a device family by its letter and/or model types."""
    dev = cls()
    if cls.model_types:
        for m in cls.model_types:
            _BY_MODEL[m.lower()] = dev
    elif cls.letter:
        _BY_LETTER[cls.letter.lower()] = dev
    return cls


def device_for_letter(letter: str) -> Device | None:
    """The model-less device family for an element letter (R, C, L, V, I, E, G, B), or None."""
    return _BY_LETTER.get(letter.lower())


def device_for_model_type(model_type: str) -> Device | None:
    """The device family implementing a `.model` type (``nmos``, ``d``, ``lk`` ...), or None."""
    return _BY_MODEL.get(model_type.lower())


def known_model_types() -> list[str]:
    """All registered `.model` types."""
    return sorted(_BY_MODEL)


def two_terminal(x: Tensor) -> Tensor:
    """Stack a branch quantity x (..., n) as (+x, -x) on a device's two terminals -> (..., n, 2)."""
    return torch.stack((x, -x), dim=-1)


def local_rows(out: DeviceEval, v: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate a device evaluation into local rows: F = [i, fs], Q = [q, qs] (zeros if absent)."""
    def part(x: Tensor | None, like: Tensor) -> Tensor:
        return torch.zeros_like(like) if x is None else torch.broadcast_to(x, like.shape)
    F = torch.cat([part(out.i, v), part(out.fs, s)], dim=-1)
    Q = torch.cat([part(out.q, v), part(out.qs, s)], dim=-1)
    return F, Q
