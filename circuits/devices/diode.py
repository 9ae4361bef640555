"""SPICE junction diode: ngspice-39's dio model (level 1) at 27 C with IS N RS BV IBV NBV CJO VJ M FC
TT, instance area and m."""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.devices.base import Device, DeviceEval, register, two_terminal
from circuits.devices.junction import GMIN, THERMAL_VOLTAGE, critical_voltage, depletion_charge, junction_current, pnjlim

_BV_ITERATIONS = 25  # diotemp.c's fixed-point iterations for the breakdown knee


def breakdown_knee(bv: Tensor, ibv: Tensor, isat: Tensor, nbv_vt: Tensor) -> Tensor:
    """The voltage xbv at which ngspice continues the reverse current exponentially so that it
    reaches ibv at -bv (diotemp.c); bv itself when ibv is below isat bv / vt."""
    vt = THERMAL_VOLTAGE
    xbv = bv - nbv_vt * torch.log(1 + ibv / isat)
    for _ in range(_BV_ITERATIONS):
        xbv = bv - nbv_vt * torch.log(ibv / isat + 1 - xbv / vt)
    return torch.where(ibv < isat * bv / vt, bv, xbv)


@register
class Diode(Device):
    """D a k model [area] [m=]: Shockley current with ngspice's reverse and breakdown (BV, IBV, NBV)
    regions, series resistance RS, depletion (CJO, VJ, M, FC) and diffusion (TT) charge.

    The state ``i`` is the diode current (into the anode); the anode side of RS is the terminal,
    the junction sees the anode voltage minus RS i (exact for RS = 0 too)."""

    letter = "d"
    family = "diode"
    model_types = ("d",)
    states = ("i",)
    model_params = {"level": 1.0, "is": 1e-14, "n": 1.0, "rs": 0.0, "bv": 0.0, "ibv": 1e-3, "nbv": 0.0,
                    "cjo": 0.0, "vj": 1.0, "mj": 0.5, "fc": 0.5, "tt": 0.0, "area": 1.0}
    # the instance area defaults to the model's (one parameter, instance value first); the model's
    # grading coefficient "m" is stored as its ngspice alias "mj" so that "m" is the multiplier
    instance_params = {"area": 1.0, "m": 1.0, "off": 0.0}
    flags = ("off",)  # written as a bare word in ngspice decks
    aliases = {"m": "mj", "cj0": "cjo", "cj": "cjo", "pb": "vj", "js": "is", "ib": "ibv"}
    levels = (1,)
    inert_params = {**{k: None for k in ("xti", "eg", "tcv", "trs", "trs1", "trs2", "tm1", "tm2", "tnom",
                                         "tref", "ttt1", "ttt2", "kf", "af", "bv_max", "fv_max", "id_max",
                                         "pd_max", "te_max", "tlev", "tlevc", "cta", "ctp", "tpb", "tphp")},
                    "tnom": 27.0, "tref": 27.0}
    rejected_params = {"tnom": "only the nominal temperature 27 C is supported",
                       "tref": "only the nominal temperature 27 C is supported",
                       **{k: "the knee currents (IKF, IKR) are not modelled" for k in ("ikf", "ikr", "jbv")},
                       **{k: "sidewall and recombination currents/capacitances are not modelled"
                          for k in ("jsw", "isw", "ns", "cjsw", "cjp", "php", "mjsw", "fcs", "isr", "nr",
                                    "pj")},
                       **{k: "instance temperatures are not supported (27 C only)" for k in ("temp", "dtemp")},
                       "ic": "diode initial conditions are not supported; use .ic on the nodes"}
    limits = True

    @staticmethod
    def _junction(u: Tensor, p: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(vd, n vt, vcrit) of local unknowns u = [va, vk, i]."""
        area = p["area"] * p["m"]
        nvt = p["n"] * THERMAL_VOLTAGE
        vd = u[..., 0] - p["rs"] / area * u[..., 2] - u[..., 1]
        return vd, nvt, critical_voltage(p["is"] * area, nvt)

    @staticmethod
    def _at_junction(vd: Tensor) -> Tensor:
        """A linearisation point with junction voltage vd: cathode at 0, no current (RS is linear)."""
        zero = torch.zeros_like(vd)
        return torch.stack((vd, zero, zero), -1)

    def limit(self, u, u_old, p, ctx=None):
        """dioload.c: pnjlim on the junction voltage with n vt (the breakdown branch's limiting
        is not reproduced)."""
        vd, nvt, vcrit = self._junction(u, p)
        vd_l = pnjlim(vd, self._junction(u_old, p)[0], nvt, vcrit)
        return u if torch.equal(vd_l, vd) else self._at_junction(vd_l)

    def limit_start(self, u, p, ctx=None):
        """dioload.c's MODEINITJCT: vd = vcrit."""
        vd, _, vcrit = self._junction(u, p)
        return self._at_junction(vcrit.expand_as(vd))

    def off_point(self, u, p, ctx=None):
        """dioload.c's OFF in MODEINITJCT and MODEINITFIX: vd = 0."""
        return self._at_junction(torch.zeros_like(u[..., 0]))

    def evaluate(self, v, s, t, p, ctx=None):
        i = s[..., 0]
        area = p["area"] * p["m"]  # ngspice: m multiplies the area
        rs = p["rs"] / area
        vd = v[..., 0] - rs * i - v[..., 1]
        nvt = p["n"] * THERMAL_VOLTAGE
        isat = p["is"] * area
        cd = junction_current(vd, isat, nvt)
        bv_given = p["bv"] != 0
        if bool(bv_given.any()):
            nbv_vt = torch.where(p["nbv"] != 0, p["nbv"], p["n"]) * THERMAL_VOLTAGE
            xbv = breakdown_knee(torch.where(bv_given, p["bv"], torch.ones_like(vd)), p["ibv"] * p["m"],
                                 isat, nbv_vt)
            breakdown = -isat * torch.exp(torch.clamp(-(xbv + vd) / nbv_vt, max=80.0))
            cd = torch.where(bv_given & (vd < -xbv), breakdown, cd)
        cd = cd + GMIN * vd
        charge = depletion_charge(vd, p["cjo"] * area, p["vj"], p["mj"], p["fc"]) + p["tt"] * cd
        zero = torch.zeros_like(i)
        return DeviceEval(i=torch.stack((i, -cd), -1), q=torch.stack((zero, -charge), -1),
                          fs=(cd - i).unsqueeze(-1), qs=charge.unsqueeze(-1))
