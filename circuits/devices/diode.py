"""SPICE junction diode (ngspice's dio model restricted to IS, N, CJO, VJ, M, FC, TT)."""

from __future__ import annotations

from circuits.devices.base import Device, DeviceEval, register, two_terminal
from circuits.devices.junction import GMIN, THERMAL_VOLTAGE, depletion_charge, junction_current


@register
class Diode(Device):
    """D a k model [area]: Shockley current + depletion (CJO, VJ, M, FC) and diffusion (TT) charge."""

    letter = "d"
    model_types = ("d",)
    model_params = {"is": 1e-14, "n": 1.0, "cjo": 0.0, "vj": 1.0, "m": 0.5, "fc": 0.5, "tt": 0.0}
    instance_params = {"area": 1.0}
    rejected_params = {"rs": "series resistance is not modelled; add an explicit R element",
                       "bv": "reverse breakdown is not modelled", "ibv": "reverse breakdown is not modelled"}

    def evaluate(self, v, s, t, p, ctx=None):
        vd = v[..., 0] - v[..., 1]
        idiode = junction_current(vd, p["is"] * p["area"], p["n"] * THERMAL_VOLTAGE)
        charge = depletion_charge(vd, p["cjo"] * p["area"], p["vj"], p["m"], p["fc"]) + p["tt"] * idiode
        return DeviceEval(i=two_terminal(idiode + GMIN * vd), q=two_terminal(charge))
