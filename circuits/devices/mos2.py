"""MOSFET level 2 (Grove-Frohman) as ngspice-39's mos2 computes it (mos2load.c, mos2temp.c) at 27 C.

The drain current of mos2load.c's moseq2 with its narrow-channel (DELTA), short-channel (XJ with the
depletion width from NSUB), mobility-degradation (UCRIT, UEXP), velocity-saturation (VMAX with Baum's
quartic for vdsat, NEFF), weak-inversion (NFS) and channel-length-modulation (LAMBDA, or from NSUB)
terms; the bulk junctions, overlap and Meyer capacitances are level 1's (TOX defaults to 0.1 um, so a
level-2 MOSFET always has Meyer's gate capacitances).  Only the current is written here: Newton takes
its derivatives from this function, so mos2's approximate analytic conductances are not needed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from circuits.devices.base import Device
from circuits.devices.junction import THERMAL_VOLTAGE
from circuits.devices.mosfet import _CHARGE, _EPS_SI, _MEYER_STATES, Mos1, junction_and_overlap_constants, meyer_half
from circuits.errors import ConfigError

_SIG1 = (1.0, -1.0, 1.0, -1.0)  # moseq2's root-sign patterns of Baum's quartic
_SIG2 = (1.0, 1.0, -1.0, -1.0)


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt of x clamped at 0 (where the C code's branch would not use the value)."""
    return torch.sqrt(torch.clamp(x, min=0.0))


def _nonzero(x: Tensor) -> Tensor:
    """x with zeros replaced by 1 (a denominator in a branch that x = 0 does not take)."""
    return torch.where(x != 0, x, torch.ones_like(x))


def baum_vdsat(vgsx: Tensor, vbin: Tensor, eta: Tensor, phi_vbs: Tensor, gammad: Tensor, sarg3: Tensor,
               xv: Tensor, vdsat: Tensor) -> Tensor:
    """vdsat from Baum's scattering-velocity theory: the smallest positive root x of moseq2's quartic
    (|poly| <= 1e-6) gives x^2 - (phi - vbs); vdsat (Grove-Frohman) is kept where no root qualifies.
    Written step by step as mos2load.c (including its comparisons' NaN semantics)."""
    v1 = (vgsx - vbin) / eta + phi_vbs
    v2 = phi_vbs
    a1 = gammad / 0.75
    b1 = -2.0 * (v1 + xv)
    c1 = -2.0 * gammad * xv
    d1 = 2.0 * v1 * (v2 + xv) - v2 * v2 - 4.0 / 3.0 * gammad * sarg3
    a = -b1
    b = a1 * c1 - 4.0 * d1
    c = -d1 * (a1 * a1 - 4.0 * b1) - c1 * c1
    r = -a * a / 3.0 + b
    s = 2.0 * a * a * a / 27.0 - a * b / 3.0 + c
    s2 = s * s
    p = s2 / 4.0 + r * r * r / 27.0
    p0 = p.abs()
    p2 = torch.sqrt(p0)
    ro = torch.exp(torch.log(torch.sqrt(s2 / 4.0 + p0)) / 3.0)
    fi = torch.atan(-2.0 * p2 / s)
    y3_neg = 2.0 * ro * torch.cos(fi / 3.0) - a / 3.0
    p3 = torch.exp(torch.log((-s / 2.0 + p2).abs()) / 3.0)
    p4 = torch.exp(torch.log((-s / 2.0 - p2).abs()) / 3.0)
    y3 = torch.where(p < 0, y3_neg, p3 + p4 - a / 3.0)
    a3 = torch.sqrt(a1 * a1 / 4.0 - b1 + y3)
    b3 = torch.sqrt(y3 * y3 / 4.0 - d1)
    found = torch.zeros_like(vdsat, dtype=torch.bool)
    xvalid = torch.zeros_like(vdsat)
    for s1, s2_ in zip(_SIG1, _SIG2):
        a4 = a1 / 2.0 + s1 * a3
        b4 = y3 / 2.0 + s2_ * b3
        delta4 = a4 * a4 / 4.0 - b4
        kept = ~(delta4 < 0)
        root = torch.sqrt(delta4)
        for x in (-a4 / 2.0 + root, -a4 / 2.0 - root):
            poly = x * x * x * x + a1 * x * x * x + b1 * x * x + c1 * x + d1
            valid = kept & ~(x <= 0) & ~(poly.abs() > 1.0e-6)
            take = valid & (~found | ~(x > xvalid))
            xvalid = torch.where(take, x, xvalid)
            found = found | valid
    return torch.where(found, xvalid * xvalid - phi_vbs, vdsat)


class Mos2(Mos1):
    """M d g s b model (level=2): ngspice's mos2 drain current with level 1's junctions and
    capacitances (junction sidewall grading MJSW defaults to 0.33 here)."""

    model_params = {**Mos1.model_params, "level": 2.0, "mjsw": 0.33, "tox": 1e-7,
                    "delta": 0.0, "uexp": 0.0, "ucrit": 1e4, "vmax": 0.0, "xj": 0.0, "neff": 1.0,
                    "nfs": 0.0}

    def states_for(self, element, model=None) -> tuple[str, ...]:
        """Meyer's derivative states (always: TOX defaults to 1e-7 m)."""
        return _MEYER_STATES

    @staticmethod
    def derived(p: dict) -> dict:
        """Per-instance constants (cached in p as level 1 does): mos2temp.c's defaulting at 27 C
        and the geometry constants of mos2load.c."""
        key = "_derived" if torch.is_grad_enabled() else "_derived_nograd"
        d = p.get(key)
        if d is not None:
            return d
        if bool((p["tox"] <= 0).any()):
            raise ConfigError("MOSFET level 2 model: TOX must be positive")
        d = Mos1._model_defaults(p)
        m, tp, phi, gamma = p["m"], p["polarity"], d["phi"], d["gamma"]
        leff = p["l"] - 2 * p["ld"]
        cox_area = d["cox"] * leff * p["w"]  # mos2load.c's unscaledOxideCap
        nsub = d["nsub"]
        factor = 0.125 * p["delta"] * 2.0 * math.pi * _EPS_SI / cox_area * leff
        d.update({"leff": leff, "sqphi": torch.sqrt(phi), "vbi": tp * (d["vto"] - tp * gamma * torch.sqrt(phi)),
                  "beta": d["kp"] * p["w"] * m / leff, "cox_total": cox_area * m,
                  "factor": factor, "eta": 1.0 + factor,
                  "xd": torch.where(nsub > 0, torch.sqrt(2 * _EPS_SI / (_CHARGE * _nonzero(nsub) * 1e6)),
                                    torch.zeros_like(nsub)),
                  "ucrit_v": p["ucrit"] * 100 * _EPS_SI / d["cox"],
                  "nfs_on": (p["nfs"] != 0) & (cox_area * m != 0),
                  "xn0": 1.0 + _CHARGE * p["nfs"] * 1e4 / d["cox"],
                  "sphi3": phi * torch.sqrt(phi), "two_over_xj": 2.0 / _nonzero(p["xj"]),
                  "half_xj_over_l": 0.5 * p["xj"] / leff, "xd_lambda": (nsub != 0) & ~(p["lambda"] > 0)})
        d["xdv"] = d["xd"] / torch.sqrt(p["neff"])
        xwb = d["xd"] * torch.sqrt(p["pb"])
        d["xld"] = leff - xwb
        d["xwb"] = torch.where(nsub == 0, torch.full_like(xwb, 0.25e-6), xwb)
        d.update({"use_xj": bool(((p["xj"] > 0) & (d["xd"] > 0) & (gamma != 0)).any()),
                  "use_nfs": bool(d["nfs_on"].any()), "use_ucrit": bool((p["uexp"] != 0).any()),
                  "use_vmax": bool((p["vmax"] > 0).any()), "use_xd_lambda": bool(d["xd_lambda"].any())})
        junction_and_overlap_constants(p, d, leff, p["w"])
        d["has_caps"] = True  # Meyer's capacitances: TOX always has a value at levels 2 and 3
        p[key] = d
        return d

    @staticmethod
    def current(vgs: Tensor, vds: Tensor, vbs: Tensor, p: dict, d: dict) -> tuple[Tensor, Tensor, Tensor]:
        """moseq2: type-normalised drain current, von and vdsat for vds >= 0 (the mode's orientation).

        Terms whose parameters are off for every instance are skipped (flags in d): on CPU each
        tensor op costs microseconds and this runs every Newton iteration."""
        vt = THERMAL_VOLTAGE
        phi, sphi, sphi3 = d["phi"], d["sqphi"], d["sphi3"]
        gamma, xd, leff = d["gamma"], d["xd"], d["leff"]
        eta, factor = d["eta"], d["factor"]
        phi_vbs = phi - vbs
        below = vbs <= 0
        sarg1 = torch.where(below, _safe_sqrt(phi_vbs), sphi / (1.0 + 0.5 * torch.clamp(vbs, min=0.0) / phi))
        vbd = vbs - vds
        below_d = vbd <= 0
        barg = torch.where(below_d, _safe_sqrt(phi_vbs + vds), sphi / (1.0 + 0.5 * torch.clamp(vbd, min=0.0) / phi))
        vbin = d["vbi"] + factor * phi_vbs
        gamasd, von = gamma, vbin + gamma * sarg1
        if d["use_xj"] or d["use_nfs"]:
            dsrgdb = torch.where(below, -0.5 / sarg1, -0.5 * sarg1 * sarg1 / sphi3)
            dbrgdb = torch.where(below_d, -0.5 / barg, -0.5 * barg * barg / sphi3)
            dgddvb = torch.zeros_like(sarg1)
            if d["use_xj"]:  # short-channel effect on the body factor (XJ > 0, depletion width from NSUB)
                with_xj = p["xj"] > 0
                args = torch.sqrt(1.0 + xd * sarg1 * d["two_over_xj"])
                argd = torch.sqrt(1.0 + xd * barg * d["two_over_xj"])
                half = d["half_xj_over_l"]
                gamasd = gamma * (1.0 - torch.where(with_xj, half * (args + argd - 2.0), torch.zeros_like(args)))
                dgddvb = -gamma * torch.where(with_xj, 0.5 / leff * (xd * dsrgdb / args + xd * dbrgdb / argd),
                                              torch.zeros_like(args))
                von = vbin + gamasd * sarg1
            if d["use_nfs"]:
                xn = d["xn0"] - (gamasd * dsrgdb + dgddvb * sarg1) + factor
                nfs_on = d["nfs_on"]
                von = torch.where(nfs_on, von + vt * xn, von)
                argg = 1.0 / (vt * xn)
        cutoff = vgs <= vbin
        if d["use_nfs"]:
            cutoff = cutoff & ~nfs_on
        sarg3 = sarg1 * sarg1 * sarg1
        body = barg * barg * barg - sarg3
        ufact = torch.ones_like(vgs)
        if d["use_ucrit"]:  # mobility degradation above the critical field
            udenom = vgs - von
            degrade = (d["cox_total"] > 0) & (udenom > d["ucrit_v"])
            ufact = torch.where(degrade, torch.exp(p["uexp"] * torch.log(
                d["ucrit_v"] / torch.where(degrade, udenom, torch.ones_like(udenom)))), ufact)
        # saturation voltage: Grove-Frohman, then Baum's velocity saturation with VMAX
        vgsx = torch.where(nfs_on, torch.maximum(vgs, von), vgs) if d["use_nfs"] else vgs
        gammad = gamasd / eta
        gammd2 = gammad * gammad
        drive = (vgsx - vbin) / eta
        argv = drive + phi_vbs
        arg1 = torch.sqrt(1.0 + 4.0 * torch.clamp(argv, min=0.0) / torch.where(gammad > 0, gammd2, torch.ones_like(gammd2)))
        vdsat_gf = torch.where(argv <= 0.0, torch.zeros_like(argv),
                               torch.clamp(drive + gammd2 * (1.0 - arg1) / 2.0, min=0.0))
        vdsat = torch.where(gammad > 0, vdsat_gf, torch.clamp(drive, min=0.0))
        vmax = p["vmax"]
        ueff = p["uo"] * 1e-4 * ufact
        if d["use_vmax"]:
            xv = vmax * leff / ueff
            vdsat = torch.where(vmax > 0, baum_vdsat(vgsx, vbin, eta, phi_vbs, gammad, sarg3, xv, vdsat), vdsat)
        # channel-length modulation: LAMBDA, or from the depletion width with NSUB
        vbsat = vbs - vdsat
        bsarg = torch.where(vbsat <= 0, _safe_sqrt(vdsat + phi_vbs), sphi / (1.0 + 0.5 * torch.clamp(vbsat, min=0.0) / phi))
        bodys = bsarg * bsarg * bsarg - sarg3
        xlamda = p["lambda"]
        if d["use_xd_lambda"]:
            nonzero_vds = vds != 0
            safe_vds = _nonzero(vds)
            from_xd = nonzero_vds & d["xd_lambda"]
            arg_v = (vds - vdsat) / 4.0
            xl_plain = xd / (leff * safe_vds) * torch.sqrt(arg_v + torch.sqrt(1.0 + arg_v * arg_v))
            xlv = vmax * d["xdv"] / (2.0 * ueff)
            xls = torch.sqrt(xlv * xlv + torch.clamp(vds - vdsat, min=0.0))
            xl_vmax = d["xdv"] / (leff * safe_vds) * (xls - xlv)
            xlamda = torch.where(from_xd, torch.where(vmax > 0, xl_vmax, xl_plain), xlamda)
        # channel shortening limited at punch-through
        clfact = 1.0 - xlamda * vds
        xwb = d["xwb"]
        punch = leff * clfact < xwb
        clfact = torch.where(punch, xwb / (1.0 + (xlamda * vds * leff - d["xld"]) / xwb) / leff, clfact)
        beta1 = d["beta"] * ufact / clfact
        # regions
        linear = vds <= vdsat
        cd_lin = (vgs - vbin - eta * vds / 2.0) * vds - gamasd * body / 1.5
        cd_sat = (vgs - vbin - eta * vdsat / 2.0) * vdsat - gamasd * bodys / 1.5
        cdrain = beta1 * torch.where(linear, cd_lin, cd_sat)
        if d["use_nfs"]:
            vdson = torch.minimum(vdsat, vds)
            body_sub = torch.where(linear, body, bodys)
            cdson = beta1 * ((von - vbin - eta * vdson * 0.5) * vdson - gamasd * body_sub / 1.5)
            # vdsat <= 0 in weak inversion: ngspice gives 0 below vth and keeps a stale value above it
            weak = torch.where(vdsat > 0, cdson * torch.exp(torch.clamp(argg * (vgs - von), max=0.0)),
                               torch.zeros_like(cdson))
            cdrain = torch.where(nfs_on & (vgs <= von), weak, cdrain)
        off = cutoff | (vds <= 1.0e-10)
        cdrain = torch.where(off, torch.zeros_like(cdrain), cdrain)
        vdsat = torch.where(cutoff, torch.zeros_like(vdsat), vdsat)
        return cdrain, von, vdsat

    def _oriented(self, v: Tensor, p: dict):
        """Mode-oriented (vgs, |vds|, vbs), the mode mask and the physical voltages."""
        tp = p["polarity"]
        vd, vg, vs, vb = v.unbind(-1)
        vds, vgs, vbs = tp * (vd - vs), tp * (vg - vs), tp * (vb - vs)
        normal = vds >= 0
        return (torch.where(normal, vgs, vgs - vds), vds.abs(), torch.where(normal, vbs, vbs - vds),
                normal, (vd, vg, vs, vb))

    def _drain_current_only(self, v, p, d):
        """Current into the drain: tp * mode * cdrain."""
        vgs, vds, vbs, normal, volts = self._oriented(v, p)
        cdrain, von, vdsat = self.current(vgs, vds, vbs, p, d)
        # evaluate() asks for Meyer's capacitances at the same v next: keep von and vdsat for it
        self._last = (v, von, vdsat)
        sign = torch.where(normal, p["polarity"], -p["polarity"])
        return sign * cdrain, volts

    def _meyer_caps(self, v: Tensor, p: dict, d: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Twice DEVqmeyer's halves with the model's von and vdsat, drain and source swapped in
        reverse mode (mos2load.c)."""
        vgs_o, vds_o, vbs_o, normal, _ = self._oriented(v, p)
        last = getattr(self, "_last", None)
        if last is not None and last[0] is v:
            von, vdsat = last[1], last[2]
        else:
            _, von, vdsat = self.current(vgs_o, vds_o, vbs_o, p, d)
        self._last = None
        v_off = vgs_o - vds_o  # the gate voltage against the mode's drain
        c_on, c_off, cgb = meyer_half(vgs_o, v_off, von, vdsat, d["phi"], d["cox_total"])
        cgs = torch.where(normal, c_on, c_off)
        cgd = torch.where(normal, c_off, c_on)
        return 2 * cgs, 2 * cgd, 2 * cgb


MOS2: Device = Mos2()
