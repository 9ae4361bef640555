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

    def resistance(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The resistance before m and scale: the value, 0 read as 1 mOhm (resparam.c)."""
        return written_resistance(p["value"])

    def evaluate(self, v, s, t, p, ctx=None):
        g = p["m"] / (self.resistance(p) * p["scale"])
        return DeviceEval(i=two_terminal((v[..., 0] - v[..., 1]) * g))


@register
class Capacitor(Device):
    """C n+ n- value [ic=v]: q = C (v+ - v-); with uic the charge starts at C ic (as ngspice)."""

    letter = "c"
    linear = True
    instance_params = {"value": 0.0, "ic": math.nan}  # NaN: no ic given

    def evaluate(self, v, s, t, p, ctx=None):
        return DeviceEval(q=two_terminal(p["value"] * (v[..., 0] - v[..., 1])))

    def uic_charges(self, v, s, p):
        vd = v[..., 0] - v[..., 1]
        return DeviceEval(q=two_terminal(p["value"] * torch.where(p["ic"].isnan(), vd, p["ic"])))


@register
class Inductor(Device):
    """L n+ n- value [ic=i]: branch current i is a state with d(L i)/dt = v+ - v-; with uic the
    flux starts at L ic (as ngspice)."""

    letter = "l"
    linear = True
    states = ("i",)
    instance_params = {"value": 0.0, "ic": math.nan}  # NaN: no ic given

    def evaluate(self, v, s, t, p, ctx=None):
        i = s[..., 0]
        return DeviceEval(i=two_terminal(i), qs=(p["value"] * i).unsqueeze(-1),
                          fs=(-(v[..., 0] - v[..., 1])).unsqueeze(-1))

    def uic_charges(self, v, s, p):
        i = torch.where(p["ic"].isnan(), s[..., 0], p["ic"])
        return DeviceEval(qs=(p["value"] * i).unsqueeze(-1))

    def state_scales(self, p):
        return torch.full_like(p["value"], 1e-3).unsqueeze(-1)


@register
class MutualInductance(Device):
    """K L1 L2 k: mutual inductance M = k sqrt(L1 L2) adds M i2 to L1's flux and M i1 to L2's
    (ngspice's dot convention: both inductors' first nodes)."""

    letter = "k"
    linear = True
    terminals = 0
    instance_params = {"value": 0.0, "l1": 0.0, "l2": 0.0}

    def evaluate(self, v, s, t, p, ctx=None):
        i1, i2 = v.unbind(-1)  # the two inductor currents (the device's references)
        m = p["value"] * torch.sqrt(p["l1"] * p["l2"])
        return DeviceEval(q=torch.stack((m * i2, m * i1), -1))
