"""MOSFET level 1 (Shichman-Hodges) as ngspice's mos1 computes it, without Meyer capacitances.

Only explicit overlap capacitances (CGSO, CGDO, CGBO) are modelled; bulk junction diodes are omitted
(their currents are ~1e-14 A at the reverse biases these circuits see).
"""

from __future__ import annotations

import torch

from circuits.devices.base import Device, DeviceEval, register

_NO_CAPS = "junction and Meyer capacitances are not modelled; use explicit C elements or CGSO/CGDO/CGBO"
_NO_RES = "series resistances are not modelled; add explicit R elements"


class Mos1(Device):
    """M d g s b model w= l=: level-1 drain current with source/drain swap and body effect."""

    letter = "m"
    terminals = 4
    polarity = 1.0
    model_params = {"level": 1.0, "vto": 0.0, "kp": 2e-5, "gamma": 0.0, "phi": 0.6, "lambda": 0.0,
                    "ld": 0.0, "cgso": 0.0, "cgdo": 0.0, "cgbo": 0.0}
    instance_params = {"w": 1e-4, "l": 1e-4, "m": 1.0}
    rejected_params = {**{k: _NO_CAPS for k in ("tox", "cbd", "cbs", "cj", "cjsw", "mj", "mjsw", "pb",
                                                "fc", "cgso_meyer")},
                       **{k: _NO_RES for k in ("rd", "rs", "rsh")},
                       **{k: "requires TOX, which is not supported" for k in ("uo", "nsub", "nss", "tpg")}}

    def drain_current(self, vgs, vds, vbs, p):
        """Type-normalised drain current for vds >= 0 (ngspice mos1load.c 'normal mode')."""
        phi, gamma = p["phi"], p["gamma"]
        sqphi = torch.sqrt(phi)
        sarg = torch.where(vbs <= 0, torch.sqrt(torch.clamp(phi - vbs, min=1e-30)),
                           torch.clamp(sqphi - vbs / (2 * sqphi), min=0.0))
        von = self.polarity * p["vto"] - gamma * sqphi + gamma * sarg
        vgst = vgs - von
        beta = p["kp"] * p["m"] * p["w"] / (p["l"] - 2 * p["ld"])
        betap = beta * (1 + p["lambda"] * vds)
        sat = 0.5 * betap * vgst * vgst
        lin = betap * vds * (vgst - 0.5 * vds)
        vgst_pos = torch.clamp(vgst, min=0.0)
        return torch.where(vgst <= 0, torch.zeros_like(vgst),
                           torch.where(vgst_pos <= vds, sat, lin))

    def evaluate(self, v, s, t, p, ctx=None):
        tp = self.polarity
        vd, vg, vs, vb = v.unbind(-1)
        vds, vgs, vbs = tp * (vd - vs), tp * (vg - vs), tp * (vb - vs)
        normal = vds >= 0
        # reverse mode: the source acts as drain, so use vgd, vsd and vbd
        ids = self.drain_current(torch.where(normal, vgs, vgs - vds), torch.abs(vds),
                                 torch.where(normal, vbs, vbs - vds), p)
        i_d = tp * torch.where(normal, ids, -ids)
        zero = torch.zeros_like(i_d)
        current = torch.stack((i_d, zero, -i_d, zero), -1)
        qgs = p["cgso"] * p["m"] * p["w"] * (vg - vs)
        qgd = p["cgdo"] * p["m"] * p["w"] * (vg - vd)
        qgb = p["cgbo"] * p["m"] * (p["l"] - 2 * p["ld"]) * (vg - vb)
        charge = torch.stack((-qgd, qgs + qgd + qgb, -qgs, -qgb), -1)
        return DeviceEval(i=current, q=charge)


@register
class NMOS(Mos1):
    """n-channel level-1 MOSFET."""

    model_types = ("nmos",)
    polarity = 1.0


@register
class PMOS(Mos1):
    """p-channel level-1 MOSFET."""

    model_types = ("pmos",)
    polarity = -1.0
