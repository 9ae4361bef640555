"""MOSFET level 3 (semi-empirical) as ngspice-39's mos3 computes it (mos3load.c, mos3temp.c) at 27 C.

moseq3's drain current: short-channel body factor (XJ, LD with the depletion width from NSUB),
narrow-width term (DELTA), static feedback (ETA), gate-field mobility modulation (THETA), velocity
saturation (VMAX), channel-length modulation (KAPPA) with the punch-through limit, weak inversion
(NFS); effective sizes with XL, XW, WD; DELVTO.  Bulk junctions (mos3's reverse-bias form), overlap
and Meyer capacitances as level 1 (TOX defaults to 0.1 um).  ngspice's `badmos3` option (the old
channel-length formulas) is not followed: the default, off, is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from circuits.devices.base import Device
from circuits.devices.junction import GMIN, THERMAL_VOLTAGE, junction_current
from circuits.devices.mos2 import Mos2, _nonzero
from circuits.devices.mosfet import _CHARGE, _EGFET, _EPS_SI, _T, Mos1, junction_and_overlap_constants
from circuits.errors import ConfigError

_COEFF = (0.0631353, 0.8013292, -0.01110777)  # moseq3's depletion-width fit
# mos3temp.c scales the intrinsic density 1.45e10 cm^-3 (at 300 K) to the nominal temperature
_NI = 1.45e16 * (_T / 300) ** 1.5 * math.exp(0.5 * _EGFET * (1 / 300 - 1 / _T) / (THERMAL_VOLTAGE / _T))


class Mos3(Mos2):
    """M d g s b model (level=3): ngspice's mos3 drain current with level 1's junctions and
    capacitances (no LAMBDA at this level; KAPPA models channel-length modulation)."""

    model_params = {**{k: v for k, v in Mos1.model_params.items() if k != "lambda"},
                    "level": 3.0, "mjsw": 0.33, "tox": 1e-7,
                    "xl": 0.0, "wd": 0.0, "xw": 0.0, "delvto": 0.0, "vmax": 0.0, "xj": 0.0, "nfs": 0.0,
                    "eta": 0.0, "delta": 0.0, "theta": 0.0, "kappa": 0.2}
    aliases = {**Mos1.aliases, "delvt0": "delvto"}

    @staticmethod
    def derived(p: dict) -> dict:
        """Per-instance constants (cached in p as level 1 does): mos3temp.c at 27 C and the
        effective sizes of mos3load.c."""
        key = "_derived" if torch.is_grad_enabled() else "_derived_nograd"
        d = p.get(key)
        if d is not None:
            return d
        if bool((p["tox"] <= 0).any()):
            raise ConfigError("MOSFET level 3 model: TOX must be positive")
        d = Mos1._model_defaults(p, ni=_NI)
        m, tp, phi, gamma, nsub = p["m"], p["polarity"], d["phi"], d["gamma"], d["nsub"]
        leff = p["l"] - 2 * p["ld"] + p["xl"]
        weff = p["w"] - 2 * p["wd"] + p["xw"]
        if bool((leff <= 0).any()) or bool((weff <= 0).any()):
            raise ConfigError("MOSFET level 3: effective channel length or width less than zero")
        alpha = torch.where(nsub > 0, 2 * _EPS_SI / (_CHARGE * _nonzero(nsub) * 1e6), torch.zeros_like(nsub))
        d.update({"leff": leff, "weff": weff, "sqphi": torch.sqrt(phi),
                  "vbi": tp * (p["delvto"] + d["vto"] - tp * gamma * torch.sqrt(phi)),
                  "beta": d["kp"] * m * weff / leff, "cox_total": d["cox"] * leff * m * weff,
                  "eta3": p["eta"] * 8.15e-22 / (d["cox"] * leff ** 3),
                  "narrow": p["delta"] * 0.5 * math.pi * _EPS_SI / d["cox"] / weff,
                  "alpha": alpha, "xdep": torch.sqrt(alpha),
                  "csonco": _CHARGE * p["nfs"] * 1e4 * leff * weff * m / (d["cox"] * leff * m * weff)})
        junction_and_overlap_constants(p, d, leff, weff)
        d["has_caps"] = True
        p[key] = d
        return d

    @staticmethod
    def current(vgs: Tensor, vds: Tensor, vbs: Tensor, p: dict, d: dict) -> tuple[Tensor, Tensor, Tensor]:
        """moseq3: type-normalised drain current, von and vdsat for vds >= 0 (the mode's orientation)."""
        vt = THERMAL_VOLTAGE
        phi, sqphis = d["phi"], d["sqphi"]
        leff, xj, ld = d["leff"], p["xj"], p["ld"]
        below = vbs <= 0
        sq_below = torch.sqrt(torch.clamp(phi - vbs, min=0.0))
        sq_above = sqphis / (1.0 + torch.clamp(vbs, min=0.0) / (phi + phi))
        sqphbs = torch.where(below, sq_below, sq_above)
        phibs = torch.where(below, phi - vbs, sq_above * sq_above)
        # short-channel factor of the body effect
        with_xj = (xj != 0) & (d["xdep"] != 0)
        safe_xj = _nonzero(xj)
        wponxj = d["xdep"] * sqphbs / safe_xj
        arga = _COEFF[0] + _COEFF[1] * wponxj + _COEFF[2] * wponxj * wponxj + ld / safe_xj
        argc = wponxj / (1.0 + wponxj)
        argb = torch.sqrt(torch.clamp(1.0 - argc * argc, min=0.0))
        fshort = torch.where(with_xj, 1.0 - xj / leff * (arga * argb - ld / safe_xj), torch.ones_like(sqphbs))
        gammas = d["gamma"] * fshort
        fbody = 0.5 * gammas / (sqphbs + sqphbs) + d["narrow"]
        onfbdy = 1.0 / (1.0 + fbody)
        qbonco = gammas * sqphbs + d["narrow"] * phibs
        vth = d["vbi"] - d["eta3"] * vds + qbonco
        nfs_on = p["nfs"] != 0
        xn = 1.0 + d["csonco"] + qbonco / (phibs + phibs)
        von = torch.where(nfs_on, vth + vt * xn, vth)
        cutoff = ~nfs_on & (vgs <= von)
        vgsx = torch.maximum(vgs, von)
        onfg = 1.0 + p["theta"] * (vgsx - vth)
        fgate = 1.0 / onfg
        us = p["uo"] * 1e-4 * fgate
        vmax = p["vmax"]
        with_vmax = vmax > 0
        arga = (vgsx - vth) * onfbdy
        vdsc = leff * vmax / us
        vdsat = torch.where(with_vmax, arga + vdsc - torch.sqrt(arga * arga + vdsc * vdsc), arga)
        vdsx = torch.minimum(vds, vdsat)
        cdrain = d["beta"] * fgate * (vgsx - vth - 0.5 * (1.0 + fbody) * vdsx) * vdsx
        onvdsc = 1.0 / torch.where(with_vmax, vdsc, torch.ones_like(vdsc))
        fdrain = torch.where(with_vmax, 1.0 / (1.0 + vdsx * onvdsc), torch.ones_like(vdsx))
        cdrain = cdrain * fdrain
        # channel-length modulation (KAPPA), only with NSUB (alpha > 0)
        alpha, kappa = d["alpha"], p["kappa"]
        safe_vdsat = _nonzero(vdsat)
        sat = vds > vdsat
        del_lin = torch.sqrt(torch.clamp(kappa * alpha * vdsat / 8, min=0.0)) * (vds / safe_vdsat) ** 4
        del_sat = torch.sqrt(torch.clamp(kappa * alpha * (vds - vdsat + vdsat / 8), min=0.0))
        gdsat = torch.clamp(cdrain * (1.0 - fdrain) * onvdsc, min=1.0e-12)
        emax = kappa * cdrain / leff / gdsat
        arg_e = 0.5 * emax * alpha
        del_vmax = torch.sqrt(arg_e * arg_e + kappa * alpha * torch.clamp(vds - vdsat, min=0.0)) - arg_e
        clm = (alpha != 0) & torch.where(sat, torch.ones_like(sat), ~with_vmax)
        delxl = torch.where(sat, torch.where(with_vmax, del_vmax, del_sat), del_lin)
        delxl = torch.where(delxl > 0.5 * leff, leff - leff * leff / (4.0 * _nonzero(delxl)), delxl)
        cdrain = torch.where(clm, cdrain / (1.0 - delxl / leff), cdrain)
        # weak inversion below von
        wfact = torch.exp(torch.clamp((vgs - von) / (vt * xn), max=0.0))
        cdrain = torch.where(nfs_on & (vgs < von), cdrain * wfact, cdrain)
        cdrain = torch.where(cutoff | (vdsx == 0), torch.zeros_like(cdrain), cdrain)
        vdsat = torch.where(cutoff, torch.zeros_like(vdsat), vdsat)
        return cdrain, von, vdsat

    @staticmethod
    def junction_currents(vbs: Tensor, vbd: Tensor, d: dict, derivatives: bool = False):
        """Bulk-source and bulk-drain diode currents with mos3load.c's reverse-bias form (and gmin)."""
        vt = torch.as_tensor(THERMAL_VOLTAGE, dtype=vbs.dtype)
        return [(junction_current(vj, isat, vt) + GMIN * vj, None) for vj, isat in ((vbs, d["iss"]), (vbd, d["isd"]))]


MOS3: Device = Mos3()
