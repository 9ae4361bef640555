"""Bipolar transistor: ngspice's Gummel-Poon model (bjtload.c, bjttemp.c of ngspice-39) at 27 C.

Series resistances RC, RB, RE are modelled with one internal state each: the current through the
resistor from the terminal to the internal node, whose voltage is the terminal voltage minus R times
that current.  The internal node's KCL is the state's equation.  This is exact for R = 0 too (where
ngspice merges the two nodes), so every Q element has the same unknowns whatever its model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.devices.base import Device, DeviceEval, register
from circuits.devices.junction import (GMIN, THERMAL_VOLTAGE, critical_voltage, depletion_charge_from, depletion_coefficients,
                                       junction_current, pnjlim)

_TEMPERATURE_ONLY = ("xtb", "eg", "xti", "tlev", "tlevc", "ctc", "cte", "cts", "tvjc", "tvje", "tvjs",
                     *(f"{k}{n}" for k in ("tbf", "tbr", "tikf", "tikr", "tirb", "tnc", "tne", "tnf", "tnr",
                                           "trb", "trc", "tre", "trm", "tvaf", "tvar", "titf", "ttf", "ttr",
                                           "tmje", "tmjc", "tmjs", "tns", "tis", "tise", "tisc", "tiss")
                       for n in (1, 2)),
                     "trb", "trc", "tre")
_NOISE_ONLY = ("kf", "af")
_WITHOUT_RCO_OR_ISS = ("vo", "gamma", "qco", "quasimod", "vg", "cn", "d", "ns")  # no effect without them
_SAFE_OPERATING_AREA = ("vbe_max", "vbc_max", "vce_max", "pd_max", "ic_max", "ib_max", "te_max")


def _inverse(x: Tensor) -> Tensor:
    """1/x, and 0 where x = 0 (ngspice's convention for 'infinite' VAF, IKF ...)."""
    return torch.where(x != 0, 1 / torch.where(x != 0, x, torch.ones_like(x)), torch.zeros_like(x))


@register
class Bjt(Device):
    """Q c b e [s] model [area] [m=]: Gummel-Poon transport current, base-charge modulation
    (VAF, VAR, IKF, IKR, NKF), leakage diodes (ISE, NE, ISC, NC), series resistances, depletion
    charges (CJE, CJC split by XCJC, CJS) and transit-time charges (TF with XTF, VTF, ITF; TR)."""

    letter = "q"
    family = "BJT"
    model_types = ("npn", "pnp")
    terminals = 4
    states = ("i_c", "i_b", "i_e")
    model_params = {"level": 1.0, "subs": 0.0,
                    "is": 1e-16, "bf": 100.0, "nf": 1.0, "vaf": 0.0, "ikf": 0.0, "nkf": 0.5, "ise": 0.0,
                    "ne": 1.5, "br": 1.0, "nr": 1.0, "var": 0.0, "ikr": 0.0, "isc": 0.0, "nc": 2.0,
                    "rb": 0.0, "re": 0.0, "rc": 0.0,
                    "cje": 0.0, "vje": 0.75, "mje": 0.33, "tf": 0.0, "xtf": 0.0, "vtf": 0.0, "itf": 0.0,
                    "cjc": 0.0, "vjc": 0.75, "mjc": 0.33, "xcjc": 1.0, "tr": 0.0,
                    "cjs": 0.0, "vjs": 0.75, "mjs": 0.0, "fc": 0.5}
    instance_params = {"area": 1.0, "m": 1.0, "off": 0.0}
    flags = ("off",)  # written as a bare word in ngspice decks
    aliases = {"va": "vaf", "ik": "ikf", "c2": "ise", "vb": "var", "c4": "isc", "pe": "vje", "me": "mje",
               "pc": "vjc", "mc": "mjc", "ccs": "cjs", "csub": "cjs", "ps": "vjs", "ms": "mjs", "nk": "nkf",
               "tref": "tnom"}
    levels = (1,)
    batched_differences = True
    limits = True
    inert_params = {**{k: None for k in (*_TEMPERATURE_ONLY, *_NOISE_ONLY, *_SAFE_OPERATING_AREA, *_WITHOUT_RCO_OR_ISS)},
                    "tnom": 27.0, "ptf": 0.0, "irb": 0.0, "iss": 0.0}
    rejected_params = {
        "tnom": "only the nominal temperature 27 C is supported",
        "ptf": "excess phase (PTF) is not modelled",
        "irb": "current-dependent base resistance (IRB) is not modelled",
        "rbm": "a minimum base resistance (RBM) other than RB is not modelled",
        "iss": "the substrate diode current (ISS) is not modelled",
        "rco": "the quasi-saturation model (RCO) is not modelled",
        **{k: "separate BE/BC saturation currents (IBE, IBC) are not modelled" for k in ("ibe", "ibc")},
        **{k: "area factors other than 'area' are not supported" for k in ("areab", "areac")},
        **{k: "instance temperatures are not supported (27 C only)" for k in ("temp", "dtemp")},
        "ic": "BJT initial conditions (ic=vbe,vce) are not supported; use .ic on the nodes",
    }

    def model_type_params(self, model_type: str) -> dict[str, float]:
        return {"polarity": 1.0 if model_type == "npn" else -1.0}

    @staticmethod
    def derived(p: dict) -> dict:
        """Bias-independent constants and which terms any instance uses, cached in p (keyed by grad
        mode as the MOSFET's): every tensor op costs microseconds on CPU, and evaluate runs every
        Newton iteration."""
        key = "_derived" if torch.is_grad_enabled() else "_derived_nograd"
        d = p.get(key)
        if d is not None:
            return d
        tp, area, mult = p["polarity"], p["area"], p["m"]
        vt = THERMAL_VOLTAGE
        # subs: 1 vertical, -1 lateral; ngspice's default is vertical for NPN, lateral for PNP
        subs = torch.where(p["subs"] != 0, torch.sign(p["subs"]), tp)
        scale = area * mult  # the resistors are conductances times area, and m devices in parallel
        fc = torch.clamp(p["fc"], max=0.9999)
        mje, mjc = torch.clamp(p["mje"], max=0.999), torch.clamp(p["mjc"], max=0.999)
        cjc = p["cjc"] * area
        d = {"subs": subs, "lateral": subs < 0, "ttype": tp * subs,
             "rc": p["rc"] / scale, "rb": p["rb"] / scale, "re": p["re"] / scale,
             "isat": p["is"] * area, "isat_bc": p["is"] * area * area,  # ngspice scales the BC IS by area twice
             "ise": torch.where(p["ise"] > 1e-4, p["is"] * p["ise"], p["ise"]) * area,
             "isc": torch.where(p["isc"] > 1e-4, p["is"] * p["isc"], p["isc"]) * area,
             "nfvt": p["nf"] * vt, "nrvt": p["nr"] * vt, "nevt": p["ne"] * vt, "ncvt": p["nc"] * vt,
             "ivaf": _inverse(p["vaf"]), "ivar": _inverse(p["var"]),
             "iikf": _inverse(p["ikf"] * area), "iikr": _inverse(p["ikr"] * area),
             "nkf": torch.clamp(p["nkf"], max=1.0),
             "ovtf": _inverse(p["vtf"] * 1.44), "itf": p["itf"] * area,
             "dep_be": depletion_coefficients(p["cje"] * area, p["vje"], mje, fc),
             "dep_bc": depletion_coefficients(cjc * p["xcjc"], p["vjc"], mjc, fc),
             "dep_bx": depletion_coefficients(cjc * (1 - p["xcjc"]), p["vjc"], mjc, fc),
             "cjs": p["cjs"] * area, "mjs": torch.clamp(p["mjs"], max=0.999),
             "vcrit": critical_voltage(p["is"], vt)}  # bjttemp.c: from IS without the area
        d["flags"] = {k: bool((x != 0).any()) for k, x in (
            ("r", p["rc"] + p["rb"] + p["re"] != 0), ("ise", d["ise"]), ("isc", d["isc"]),
            ("q1", d["ivaf"] + d["ivar"] != 0), ("q2", d["iikf"] + d["iikr"] != 0), ("xtf", p["xtf"]),
            ("cje", d["dep_be"][0]), ("cjc", d["dep_bc"][0]), ("cbx", d["dep_bx"][0]), ("cjs", d["cjs"]),
            ("tf", p["tf"]), ("tr", p["tr"]))}
        p[key] = d
        return d

    def _junctions(self, u: Tensor, p: dict, d: dict) -> tuple[Tensor, Tensor]:
        """Type-normalised (vbe, vbc) at the internal nodes from local unknowns u = [v, s]."""
        vc, vb, ve, _, i_c, i_b, i_e = u.unbind(-1)
        tp = p["polarity"]
        vbp = vb - d["rb"] * i_b
        return tp * (vbp - (ve - d["re"] * i_e)), tp * (vbp - (vc - d["rc"] * i_c))

    def _at_junctions(self, u: Tensor, vbe: Tensor, vbc: Tensor, p: dict, d: dict) -> Tensor:
        """A linearisation point with junction voltages (vbe, vbc) and the substrate junction's
        voltage of u: terminals at the internal nodes, referred to the base, zero currents (the
        resistors are linear, so the companion model is exact in them from any point, and small
        values keep the forward differences' steps small)."""
        vc, vb, ve, vs, i_c, i_b, _ = u.unbind(-1)
        tp = p["polarity"]
        vcp, vbp = vc - d["rc"] * i_c, vb - d["rb"] * i_b
        zero = torch.zeros_like(vbe)
        vc_to, ve_to = -tp * vbc, -tp * vbe
        vs_to = vs - torch.where(d["lateral"], vbp, vcp - vc_to)
        return torch.stack((vc_to, zero, ve_to, vs_to, zero, zero, zero), -1)

    def limit(self, u, u_old, p, ctx=None):
        """bjtload.c: pnjlim on vbe and vbc with vt and vcrit (the substrate junction carries only
        gmin and charge here, so it is not limited)."""
        d = self.derived(p)
        vbe, vbc = self._junctions(u, p, d)
        vbe_old, vbc_old = self._junctions(u_old, p, d)
        vt = THERMAL_VOLTAGE
        vbe_l, vbc_l = pnjlim(vbe, vbe_old, vt, d["vcrit"]), pnjlim(vbc, vbc_old, vt, d["vcrit"])
        if torch.equal(vbe_l, vbe) and torch.equal(vbc_l, vbc):
            return u
        return self._at_junctions(u, vbe_l, vbc_l, p, d)

    def limit_start(self, u, p, ctx=None):
        """bjtload.c's MODEINITJCT: vbe = vcrit, vbc = 0."""
        d = self.derived(p)
        vbe, _ = self._junctions(u, p, d)
        return self._at_junctions(u, d["vcrit"].expand_as(vbe), torch.zeros_like(vbe), p, d)

    def off_point(self, u, p, ctx=None):
        """bjtload.c's OFF in MODEINITJCT and MODEINITFIX: vbe = vbc = 0."""
        d = self.derived(p)
        zero = torch.zeros_like(u[..., 0])
        return self._at_junctions(u, zero, zero, p, d)

    def evaluate(self, v, s, t, p, ctx=None):
        d = self.derived(p)
        flags = d["flags"]
        tp, mult = p["polarity"], p["m"]
        vc, vb, ve, vs = v.unbind(-1)
        i_c, i_b, i_e = s.unbind(-1)
        if flags["r"]:
            vcp = vc - d["rc"] * i_c
            vbp = vb - d["rb"] * i_b
            vep = ve - d["re"] * i_e
        else:
            vcp, vbp, vep = vc, vb, ve
        vbe, vbc = tp * (vbp - vep), tp * (vbp - vcp)
        lateral = d["lateral"]
        vsub = d["ttype"] * (vs - torch.where(lateral, vbp, vcp))

        cbe = junction_current(vbe, d["isat"], d["nfvt"])
        cbc = junction_current(vbc, d["isat_bc"], d["nrvt"])
        cben = GMIN * vbe
        if flags["ise"]:
            cben = cben + junction_current(vbe, d["ise"], d["nevt"])
        cbcn = GMIN * vbc
        if flags["isc"]:
            cbcn = cbcn + junction_current(vbc, d["isc"], d["ncvt"])

        q1 = 1 / (1 - d["ivaf"] * vbc - d["ivar"] * vbe) if flags["q1"] else torch.ones_like(vbe)
        if flags["q2"]:
            q2 = d["iikf"] * cbe + d["iikr"] * cbc
            arg = torch.clamp(1 + 4 * q2, min=0.0)
            sqarg = torch.where(arg != 0, torch.pow(arg, d["nkf"]), torch.ones_like(arg))
            qb = q1 * (1 + sqarg) / 2
        else:
            qb = q1  # q2 = 0: (1 + 1^nkf) / 2 = 1

        cc = (cbe - cbc) / qb - cbc / p["br"] - cbcn
        cb = cbe / p["bf"] + cben + cbc / p["br"] + cbcn
        csub = GMIN * vsub

        # internal-node currents (into the device) at (c', b', e') and the substrate terminal
        dev_c, dev_b, dev_e = tp * cc, tp * cb, -tp * (cc + cb)
        ttype = d["ttype"]
        i_s = ttype * csub
        zero = torch.zeros_like(i_c)
        dev_c = dev_c - torch.where(lateral, zero, i_s)
        dev_b = dev_b - torch.where(lateral, i_s, zero)
        current = torch.stack((i_c, i_b, i_e, mult * i_s), -1)
        fs = torch.stack((mult * dev_c - i_c, mult * dev_b - i_b, mult * dev_e - i_e), -1)
        if not any(flags[k] for k in ("cje", "cjc", "cbx", "cjs", "tf", "tr")):
            return DeviceEval(i=current, fs=fs)

        vbx = tp * (vb - vcp)
        qbe, qbc, qbx, qsub = self._charges(vbe, vbc, vbx, vsub, cbe, cbc, qb, p, d)
        q_cp = -tp * (qbc + qbx) - torch.where(lateral, zero, ttype * qsub)
        q_bp = tp * (qbe + qbc) - torch.where(lateral, ttype * qsub, zero)
        q_ep = -tp * qbe
        charge = mult.unsqueeze(-1) * torch.stack((zero, tp * qbx, zero, ttype * qsub), -1)
        qs = mult.unsqueeze(-1) * torch.stack((q_cp, q_bp, q_ep), -1)
        return DeviceEval(i=current, q=charge, fs=fs, qs=qs)

    @staticmethod
    def _charges(vbe: Tensor, vbc: Tensor, vbx: Tensor, vsub: Tensor, cbe: Tensor, cbc: Tensor,
                 qb: Tensor, p: dict[str, Tensor], d: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Type-normalised charges qbe (b'-e'), qbc (b'-c'), qbx (b-c') and qsub (s-c' or s-b')."""
        flags = d["flags"]
        zero = torch.zeros_like(vbe)
        qbe = qbc = qbx = qsub = zero
        if flags["tf"]:
            # transit-time current: TF's bias dependence (XTF, VTF, ITF) and base-charge modulation
            cbe_tt = cbe
            if flags["xtf"]:
                itf = d["itf"]
                argtf = p["xtf"] * torch.exp(vbc * d["ovtf"])
                ratio = cbe / (cbe + torch.where(itf != 0, itf, torch.ones_like(itf)))
                argtf = torch.where(itf != 0, argtf * ratio * ratio, argtf)
                cbe_tt = torch.where(vbe > 0, cbe * (1 + argtf) / qb, cbe)
            else:
                cbe_tt = torch.where(vbe > 0, cbe / qb, cbe)
            qbe = p["tf"] * cbe_tt
        if flags["cje"]:
            qbe = qbe + depletion_charge_from(vbe, d["dep_be"])
        if flags["tr"]:
            qbc = p["tr"] * cbc
        if flags["cjc"]:
            qbc = qbc + depletion_charge_from(vbc, d["dep_bc"])
        if flags["cbx"]:
            qbx = depletion_charge_from(vbx, d["dep_bx"])
        if flags["cjs"]:
            cjs, mjs, vjs = d["cjs"], d["mjs"], p["vjs"]
            arg = torch.clamp(1 - vsub / vjs, min=1e-12)
            reverse = vjs * cjs * (1 - arg * torch.pow(arg, -mjs)) / (1 - mjs)
            qsub = torch.where(vsub < 0, reverse, vsub * cjs * (1 + mjs * vsub / (2 * vjs)))
        return qbe, qbc, qbx, qsub
