"""SPICE junction diode (ngspice's dio model restricted to IS, N, CJO, VJ, M, FC, TT)."""

from __future__ import annotations

import math

import torch

from circuits.devices.base import Device, DeviceEval, register, two_terminal

THERMAL_VOLTAGE = 1.380649e-23 * 300.15 / 1.602176634e-19  # kT/q at ngspice's default 27 C
GMIN = 1e-12  # ngspice adds gmin in parallel with every junction
_EXP_LIMIT = 40.0  # beyond this the exponential is continued linearly to keep Newton finite


def _limited_exp(x):
    """exp(x) continued linearly above _EXP_LIMIT (value and slope continuous)."""
    e = math.exp(_EXP_LIMIT)
    return torch.where(x < _EXP_LIMIT, torch.exp(torch.clamp(x, max=_EXP_LIMIT)),
                       e * (1 + x - _EXP_LIMIT))


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
        nvt = p["n"] * THERMAL_VOLTAGE
        isat = p["is"] * p["area"]
        forward = isat * (_limited_exp(vd / nvt) - 1)
        # ngspice's reverse-bias form below -3 n Vt
        arg = (3 * nvt / (math.e * torch.clamp(vd, max=-1e-30))) ** 3
        reverse = -isat * (1 + arg)
        cur = torch.where(vd >= -3 * nvt, forward, reverse) + GMIN * vd
        return DeviceEval(i=two_terminal(cur), q=two_terminal(self._charge(vd, forward, p)))

    @staticmethod
    def _charge(vd, idiode, p):
        """Depletion charge (ngspice's FC linearisation) plus transit-time charge."""
        cj0, vj, m, fc = p["cjo"] * p["area"], p["vj"], p["m"], p["fc"]
        below = vj / (1 - m) * (1 - torch.pow(torch.clamp(1 - vd / vj, min=1e-12), 1 - m))
        f1 = vj / (1 - m) * (1 - torch.pow(1 - fc, 1 - m))
        f2 = torch.pow(1 - fc, 1 + m)
        f3 = 1 - fc * (1 + m)
        fcv = fc * vj
        above = f1 + (f3 * (vd - fcv) + m / (2 * vj) * (vd * vd - fcv * fcv)) / f2
        return cj0 * torch.where(vd < fcv, below, above) + p["tt"] * idiode
