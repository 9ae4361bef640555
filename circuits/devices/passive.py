"""Linear passive elements: resistor, capacitor, inductor."""

from __future__ import annotations

import torch

from circuits.devices.base import Device, DeviceEval, register, two_terminal


@register
class Resistor(Device):
    """R n+ n- value: i = (v+ - v-) / R."""

    letter = "r"
    linear = True
    instance_params = {"value": 1.0}

    def evaluate(self, v, s, t, p, ctx=None):
        return DeviceEval(i=two_terminal((v[..., 0] - v[..., 1]) / p["value"]))


@register
class Capacitor(Device):
    """C n+ n- value: q = C (v+ - v-)."""

    letter = "c"
    linear = True
    instance_params = {"value": 0.0, "ic": 0.0}

    def evaluate(self, v, s, t, p, ctx=None):
        return DeviceEval(q=two_terminal(p["value"] * (v[..., 0] - v[..., 1])))


@register
class Inductor(Device):
    """L n+ n- value: branch current i is a state with d(L i)/dt = v+ - v-."""

    letter = "l"
    linear = True
    states = ("i",)
    instance_params = {"value": 0.0, "ic": 0.0}

    def evaluate(self, v, s, t, p, ctx=None):
        i = s[..., 0]
        return DeviceEval(i=two_terminal(i), qs=(p["value"] * i).unsqueeze(-1),
                          fs=(-(v[..., 0] - v[..., 1])).unsqueeze(-1))

    def state_scales(self, p):
        return torch.full_like(p["value"], 1e-3).unsqueeze(-1)
