"""MOSFET level 1 (Shichman-Hodges) as ngspice's mos1 computes it, without Meyer capacitances.

Only explicit overlap capacitances (CGSO, CGDO, CGBO) are modelled; bulk junction diodes are omitted
(their currents are ~1e-14 A at the reverse biases these circuits see).
"""

from __future__ import annotations

import torch

from circuits.devices.base import Device, DeviceEval, register

_NO_CAPS = "junction and Meyer capacitances are not modelled; use explicit C elements or CGSO/CGDO/CGBO"
_NO_RES = "series resistances are not modelled; add explicit R elements"


@register
class Mos1(Device):
    """M d g s b model w= l=: level-1 drain current with source/drain swap and body effect.

    NMOS and PMOS share one device (polarity +1/-1 comes from the model type), so every MOSFET of
    a circuit is evaluated in one vectorised call.
    """

    letter = "m"
    model_types = ("nmos", "pmos")
    terminals = 4
    model_params = {"level": 1.0, "vto": 0.0, "kp": 2e-5, "gamma": 0.0, "phi": 0.6, "lambda": 0.0,
                    "ld": 0.0, "cgso": 0.0, "cgdo": 0.0, "cgbo": 0.0}
    instance_params = {"w": 1e-4, "l": 1e-4, "m": 1.0}
    rejected_params = {**{k: _NO_CAPS for k in ("tox", "cbd", "cbs", "cj", "cjsw", "mj", "mjsw", "pb",
                                                "fc")},
                       **{k: _NO_RES for k in ("rd", "rs", "rsh")},
                       **{k: "requires TOX, which is not supported" for k in ("uo", "nsub", "nss", "tpg")}}

    def model_type_params(self, model_type: str) -> dict[str, float]:
        return {"polarity": 1.0 if model_type == "nmos" else -1.0}

    def prepare(self, elements, env, tran):
        """Nothing per group; derived constants are computed lazily per parameter dict."""
        return None

    @staticmethod
    def derived(p: dict) -> dict:
        """Per-instance constants of the drain-current equation (cached in the parameter dict)."""
        d = p.get("_derived")
        if d is None:
            sqphi = torch.sqrt(p["phi"])
            leff = p["l"] - 2 * p["ld"]
            d = {"sqphi": sqphi, "von0": p["polarity"] * p["vto"] - p["gamma"] * sqphi,
                 "beta": p["kp"] * p["m"] * p["w"] / leff,
                 "cgs": p["cgso"] * p["m"] * p["w"], "cgd": p["cgdo"] * p["m"] * p["w"],
                 "cgb": p["cgbo"] * p["m"] * leff,
                 "has_caps": bool((p["cgso"] != 0).any() or (p["cgdo"] != 0).any() or (p["cgbo"] != 0).any())}
            p["_derived"] = d
        return d

    @staticmethod
    def drain_current(vgs, vds, vbs, p, d):
        """Type-normalised drain current for vds >= 0 (ngspice mos1load.c 'normal mode')."""
        gamma, sqphi = p["gamma"], d["sqphi"]
        sarg = torch.where(vbs <= 0, torch.sqrt(torch.clamp(p["phi"] - vbs, min=1e-30)),
                           torch.clamp(sqphi - vbs / (2 * sqphi), min=0.0))
        vgst = vgs - (d["von0"] + gamma * sarg)
        betap = d["beta"] * (1 + p["lambda"] * vds)
        sat = 0.5 * vgst * vgst
        lin = vds * (vgst - 0.5 * vds)
        return betap * torch.where(vgst <= 0, torch.zeros_like(vgst), torch.where(vgst <= vds, sat, lin))

    def evaluate(self, v, s, t, p, ctx=None):
        d = self.derived(p)
        tp = p["polarity"]
        vd, vg, vs, vb = v.unbind(-1)
        vds, vgs, vbs = tp * (vd - vs), tp * (vg - vs), tp * (vb - vs)
        normal = vds >= 0
        # reverse mode: the source acts as drain, so use vgd, vsd and vbd
        ids = self.drain_current(torch.where(normal, vgs, vgs - vds), torch.abs(vds),
                                 torch.where(normal, vbs, vbs - vds), p, d)
        i_d = tp * torch.where(normal, ids, -ids)
        zero = torch.zeros_like(i_d)
        current = torch.stack((i_d, zero, -i_d, zero), -1)
        if not d["has_caps"]:
            return DeviceEval(i=current)
        qgs = d["cgs"] * (vg - vs)
        qgd = d["cgd"] * (vg - vd)
        qgb = d["cgb"] * (vg - vb)
        charge = torch.stack((-qgd, qgs + qgd + qgb, -qgs, -qgb), -1)
        return DeviceEval(i=current, q=charge)
