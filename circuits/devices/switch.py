"""Voltage- and current-controlled switches (S with ``.model sw``, W with ``.model csw``), as ngspice 39.

A switch is a resistor of 1/ron or 1/roff.  Which one depends on the control value c (S: v(nc+, nc-),
W: the current through a voltage source) *and on the switch's state at the previous accepted time
point* (hysteresis, ngspice swload.c / cswload.c with vh >= 0):

    on  if c > vt + vh,   off if c < vt - vh,   else the previous state.

The state is a discrete memory of the device, not an unknown of the DAE: it is kept in the group's
context (`SwitchMemory`), the equations of a step use the state of the last accepted point (so a
step's Newton sees a plain resistor), and the transient loop (`circuits.discrete`) advances it:
a step after which the rule above gives another state is a switching event, located by retrying
the step until it ends just past the threshold crossing (`crossing`), where the state changes
(`commit`) and the step is solved again with it.  With the new state, a control back inside the band
keeps it, as ngspice's Newton keeps its last iteration's state there.  The DC operating point starts
from the instance's ``on`` / ``off`` flag (default off, ngspice's MODEINITJCT) and is solved again
while the rule changes a state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuits.devices.base import Device, DeviceEval, register
from circuits.errors import NetlistError

__all__ = ["SwitchMemory", "VoltageSwitch", "CurrentSwitch"]

GMIN = 1e-12  # ngspice's default gmin: the off conductance when roff is not given


@dataclass
class SwitchMemory:
    """The switches' states at the last accepted time point ((B, n_inst) bool), or None before the
    first one (then the instances' ``on`` flags)."""

    elements: list
    previous: Tensor | None = None


class _Switch(Device):
    """What S and W share: the conductance from the hysteresis state."""

    terminals = 2
    # affine in the unknowns for a given state: solvers fold the switch into constant matrices and
    # fold again after each commit that changes a state (see circuits.solve)
    linear = True
    instance_params = {"on": 0.0}
    flags = ("on",)  # instance parameters written as bare words (``on``) in ngspice decks
    threshold, hysteresis = "vt", "vh"

    def prepare(self, elements, env, tran):
        return SwitchMemory(list(elements))

    @staticmethod
    def control(v: Tensor) -> Tensor:
        """The control value from the local unknowns (..., n_inst, 3 or 4)."""
        raise NotImplementedError

    def _check(self, p: dict[str, Tensor], memory: SwitchMemory) -> None:
        bad = p[self.hysteresis] < 0
        if bool(bad.any()):
            el = memory.elements[int(bad.reshape(-1, bad.shape[-1]).any(0).nonzero()[0])]
            raise NetlistError(f"{el.name}: negative {self.hysteresis} is not supported (ngspice's "
                               "negative-hysteresis switch toggles inside the band)", el.loc.file, el.loc.line)

    def current_state(self, p: dict[str, Tensor], memory: SwitchMemory) -> Tensor:
        """The state the equations use (bool): the last committed one, else the ``on`` flags."""
        if memory.previous is not None:
            return memory.previous
        self._check(p, memory)
        return p["on"] > 0.5

    def state(self, v: Tensor, p: dict[str, Tensor], memory: SwitchMemory) -> Tensor:
        """The state the hysteresis rule gives for the unknowns v after the current state."""
        c = self.control(v)
        hi = p[self.threshold] + p[self.hysteresis]
        lo = p[self.threshold] - p[self.hysteresis]
        previous = torch.broadcast_to(self.current_state(p, memory), c.shape)
        return torch.where(c > hi, True, torch.where(c < lo, False, previous))

    def conductance(self, v: Tensor, p: dict[str, Tensor], memory: SwitchMemory) -> Tensor:
        state = torch.broadcast_to(self.current_state(p, memory), v.shape[:-1])
        return torch.where(state, 1.0 / p["ron"], 1.0 / p["roff"])

    def evaluate(self, v, s, t, p, ctx=None):
        i = self.conductance(v, p, ctx) * (v[..., 0] - v[..., 1])
        zero = torch.zeros_like(i)
        return DeviceEval(i=torch.stack([i, -i] + [zero] * (v.shape[-1] - 2), dim=-1))

    def local_jacobian(self, v, s, t, p, ctx=None):
        """The conductance stamp; the control enters only through the (piecewise constant) state."""
        g = self.conductance(v, p, ctx)
        m = v.shape[-1]
        jf = torch.zeros(*v.shape, m, dtype=v.dtype)
        jf[..., 0, 0], jf[..., 0, 1], jf[..., 1, 0], jf[..., 1, 1] = g, -g, -g, g
        return self.evaluate(v, s, t, p, ctx), jf, torch.zeros_like(jf)

    def commit(self, v: Tensor, p: dict[str, Tensor], memory: SwitchMemory) -> bool:
        """Advance the memory by the rule at the unknowns v; whether some state changed."""
        new = self.state(v, p, memory)
        changed = bool((new != self.current_state(p, memory)).any())
        memory.previous = new
        return changed

    def crossing(self, v_old: Tensor, v_new: Tensor, p: dict[str, Tensor], memory: SwitchMemory) -> Tensor:
        """Per instance, the fraction of the step from v_old to v_new at which the control crossed
        the threshold that changes the state (linear in the step), or inf where it does not change."""
        new = self.state(v_new, p, memory)
        changed = new != torch.broadcast_to(self.current_state(p, memory), new.shape)
        level = torch.where(new, p[self.threshold] + p[self.hysteresis], p[self.threshold] - p[self.hysteresis])
        c0, c1 = self.control(v_old), self.control(v_new)
        frac = ((level - c0) / (c1 - c0)).nan_to_num(1.0).clamp(0.0, 1.0)
        return torch.where(changed, frac, torch.full_like(frac, float("inf")))


@register
class VoltageSwitch(_Switch):
    """S n+ n- nc+ nc- model [on|off]: voltage-controlled switch (vt, vh in V)."""

    letter = "s"
    model_types = ("sw",)
    terminals = 4
    model_params = {"vt": 0.0, "vh": 0.0, "ron": 1.0, "roff": 1.0 / GMIN}

    @staticmethod
    def control(v: Tensor) -> Tensor:
        return v[..., 2] - v[..., 3]


@register
class CurrentSwitch(_Switch):
    """W n+ n- vname model [on|off]: current-controlled switch on i(vname) (it, ih in A)."""

    letter = "w"
    model_types = ("csw",)
    terminals = 2
    model_params = {"it": 0.0, "ih": 0.0, "ron": 1.0, "roff": 1.0 / GMIN}
    threshold, hysteresis = "it", "ih"

    @staticmethod
    def control(v: Tensor) -> Tensor:
        return v[..., 2]  # the controlling source's branch current (the device's reference)
