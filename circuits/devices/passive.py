"""Linear passive elements: resistor, capacitor, inductor."""

from __future__ import annotations

import math

import torch

from circuits.devices.base import Device, DeviceEval, register, two_terminal


ZERO_RESISTANCE = 1e-3  # resparam.c: a resistance of 0 "causes ngspice to hang", so it is 1 mOhm


def written_resistance(value: torch.Tensor) -> torch.Tensor:
    """An instance's resistance value as ngspice stores it (0 becomes `ZERO_RESISTANCE`)."""
    return torch.where(value == 0, torch.full_like(value, ZERO_RESISTANCE), value)


@register
class Resistor(Device):
    """R n+ n- value [m=] [scale=]: i = m (v+ - v-) / (R scale), as ngspice-39's restemp.c."""

    letter = "r"
    linear = True
    instance_params = {"value": 1.0, "m": 1.0, "scale": 1.0}
    alter_params = {"resistance": "value", "r": "value", "m": "m", "scale": "scale"}

    def resistance(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The resistance before m and scale: the value, 0 read as 1 mOhm (resparam.c)."""
        return written_resistance(p["value"])

    def evaluate(self, v, s, t, p, ctx=None):
        g = p["m"] / (self.resistance(p) * p["scale"])
        return DeviceEval(i=two_terminal((v[..., 0] - v[..., 1]) * g))


def capacitance(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """A capacitor's effective capacitance, as ngspice-39's captemp.c and capload.c: value x scale,
    its charge and current then multiplied by m (tc1, tc2 act through temp - tnom, 0 at 27 C)."""
    return p["value"] * p["scale"] * p["m"]


def inductance(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """An inductor's effective inductance, as ngspice-39's indtemp.c and indload.c: value x scale / m
    (m parallel inductors)."""
    return p["value"] * p["scale"] / p["m"]


@register
class Capacitor(Device):
    """C n+ n- value [ic=v] [m=] [scale=]: q = C scale m (v+ - v-); with uic the charge starts at
    that capacitance times ic (as ngspice)."""

    letter = "c"
    linear = True
    instance_params = {"value": 0.0, "ic": math.nan, "m": 1.0, "scale": 1.0}  # ic NaN: no ic given
    alter_params = {"capacitance": "value", "cap": "value", "c": "value", "m": "m", "scale": "scale"}

    def evaluate(self, v, s, t, p, ctx=None):
        return DeviceEval(q=two_terminal(capacitance(p) * (v[..., 0] - v[..., 1])))

    def uic_charges(self, v, s, p):
        vd = v[..., 0] - v[..., 1]
        return DeviceEval(q=two_terminal(capacitance(p) * torch.where(p["ic"].isnan(), vd, p["ic"])))


@register
class Inductor(Device):
    """L n+ n- value [ic=i] [m=] [scale=]: branch current i is a state with d(L i)/dt = v+ - v-,
    L = value scale / m; with uic the flux starts at L ic (as ngspice)."""

    letter = "l"
    linear = True
    states = ("i",)
    instance_params = {"value": 0.0, "ic": math.nan, "m": 1.0, "scale": 1.0}  # ic NaN: no ic given
    alter_params = {"inductance": "value", "m": "m", "scale": "scale"}

    def evaluate(self, v, s, t, p, ctx=None):
        i = s[..., 0]
        return DeviceEval(i=two_terminal(i), qs=(inductance(p) * i).unsqueeze(-1),
                          fs=(-(v[..., 0] - v[..., 1])).unsqueeze(-1))

    def uic_charges(self, v, s, p):
        i = torch.where(p["ic"].isnan(), s[..., 0], p["ic"])
        return DeviceEval(qs=(inductance(p) * i).unsqueeze(-1))

    def state_scales(self, p):
        return torch.full_like(p["value"], 1e-3).unsqueeze(-1)


@register
class MutualInductance(Device):
    """K L1 L2 k: mutual inductance M = k sqrt(|L1 s1 L2 s2|) adds M i2 to L1's flux and M i1 to
    L2's (ngspice's dot convention: both inductors' first nodes).  s1, s2: the inductors' scale=;
    as ngspice-39's muttemp.c, M does not divide by the inductors' m=."""

    letter = "k"
    linear = True
    terminals = 0
    instance_params = {"value": 0.0, "l1": 0.0, "l2": 0.0, "s1": 1.0, "s2": 1.0}

    def evaluate(self, v, s, t, p, ctx=None):
        i1, i2 = v.unbind(-1)  # the two inductor currents (the device's references)
        m = p["value"] * torch.sqrt(torch.abs(p["l1"] * p["s1"] * p["l2"] * p["s2"]))
        return DeviceEval(q=torch.stack((m * i2, m * i1), -1))
