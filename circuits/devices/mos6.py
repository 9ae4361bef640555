"""MOSFET level 6 (Sakurai-Newton n-th power law) as ngspice-39's mos6 computes it (mos6load.c,
mos6temp.c, mos6set.c) at 27 C.

Above the turn-on voltage von = vbi + GAMMA sarg - GAMMA1 vbs - SIGMA vds the saturation current is
KC W/Leff (vgs - von)^NC (1 + (LAMBDA0 - LAMBDA1 vbs) vds) and the saturation voltage
KV (vgs - von)^NV; below vdsat the current falls parabolically in vds/vdsat.  KC follows from UO and
TOX where not given, PHI GAMMA VTO from NSUB NSS TPG as at level 1 (mos6temp.c); LAMBDA stands for
LAMBDA0 where that is not given.  Junctions, overlap and Meyer's gate capacitances are level 1's (no
TOX: no gate capacitance); mos6 multiplies its whole stamp by M, so gmin too scales with M and the
junction limiting's vcrit does not.  NVTH and PS are accepted: ngspice reads them but never uses them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.devices.base import Device
from circuits.devices.junction import GMIN
from circuits.devices.mos2 import Mos2
from circuits.devices.mosfet import _MEYER_STATES, _NAN, Mos1, _given, _or, junction_and_overlap_constants
from circuits.errors import ConfigError


class Mos6(Mos2):
    """M d g s b model (level=6): ngspice's mos6 drain current with level 1's junctions and
    capacitances (Meyer's only with TOX, as at level 1)."""

    model_params = {"level": 6.0, "vto": _NAN, "kv": 2.0, "nv": 0.5, "kc": _NAN, "nc": 1.0,
                    "lambda": _NAN, "lambda0": _NAN, "lambda1": 0.0,
                    "gamma": _NAN, "gamma1": 0.0, "sigma": 0.0, "phi": _NAN,
                    **{k: Mos1.model_params[k] for k in ("ld", "cgso", "cgdo", "cgbo", "is", "js", "cbd", "cbs",
                                                         "cj", "cjsw", "mj", "mjsw", "pb", "fc",
                                                         "tox", "uo", "nsub", "nss", "tpg")}}
    # mos6 defines no noise parameters: kf, af ... are unknown here
    inert_params = {k: v for k, v in Mos1.inert_params.items() if k in ("rd", "rs", "rsh", "tnom")} | {
        "nvth": None, "ps": None}

    def states_for(self, element, model=None) -> tuple[str, ...]:
        """Meyer's derivative states when the model gives TOX (as level 1: no default TOX)."""
        return _MEYER_STATES if model is not None and "tox" in model.params else ()

    @staticmethod
    def derived(p: dict) -> dict:
        """Per-instance constants (cached in p as level 1 does): mos6set.c's and mos6temp.c's
        defaulting at 27 C and the geometry constants of mos6load.c."""
        key = "_derived" if torch.is_grad_enabled() else "_derived_nograd"
        d = p.get(key)
        if d is not None:
            return d
        d = Mos1._model_defaults(p)
        m, tp, phi, cox = p["m"], p["polarity"], d["phi"], d["cox"]
        leff = p["l"] - 2 * p["ld"]
        if bool((leff <= 0).any()):
            raise ConfigError("MOSFET level 6: effective channel length less than zero")
        kc = torch.where(_given(p["kc"]), p["kc"],
                         torch.where(cox != 0, 0.5 * p["uo"] * cox * 1e-4, torch.full_like(cox, 5e-5)))
        sqphi = torch.sqrt(phi)
        d.update({"sqphi": sqphi, "von0": tp * d["vto"] - d["gamma"] * sqphi,
                  "gamma1": p["gamma1"], "sigma": p["sigma"],
                  "lambda0": torch.where(_given(p["lambda0"]), p["lambda0"], _or(p["lambda"], 0.0)),
                  "beta": kc * m * p["w"] / leff, "cox_total": cox * leff * m * p["w"],
                  "gmin": GMIN * m})
        junction_and_overlap_constants(p, d, leff, p["w"])
        # mos6temp.c's vcrit uses the saturation currents without m
        d["iss_vcrit"], d["isd_vcrit"] = d["iss"] / m, d["isd"] / m
        d["has_caps"] = bool((p["cgso"] != 0).any() or (p["cgdo"] != 0).any() or (p["cgbo"] != 0).any()
                             or d["junction_caps"])
        p[key] = d
        return d

    @staticmethod
    def drain_current(vgs: Tensor, vds: Tensor, vbs: Tensor, p: dict, d: dict, derivatives: bool = True):
        """Type-normalised drain current and (gm, gds, gmbs) for vds >= 0 (the mode's orientation),
        with mos6load.c's conductances; derivatives=False leaves them None."""
        cdrain, _, _, parts = Mos6._nth_power(vgs, vds, vbs, p, d)
        if not derivatives:
            return cdrain, None, None, None
        vgon, vdsat, idsat, csat, lam, vdst, linear, below, sarg = parts
        nc, nv, sigma, lambda1 = p["nc"], p["nv"], d["sigma"], p["lambda1"]
        on = vgon > 0
        zero = torch.zeros_like(cdrain)
        safe_vgon = torch.where(on, vgon, torch.ones_like(vgon))
        safe_vdsat = torch.where(linear, vdsat, torch.ones_like(vdsat))  # linear: vdsat > vds >= 0
        # d von / d vbs = -vonbm (ngspice leaves vonbm 0 where sarg = 0)
        vonbm = torch.where(sarg <= 0, zero, d["gamma1"] + d["gamma"] * torch.where(
            below, 0.5 / torch.where(sarg > 0, sarg, torch.ones_like(sarg)), 0.5 / d["sqphi"]))
        gm = csat * nc / safe_vgon
        gds = gm * sigma + idsat * lam
        gmbs = gm * vonbm - idsat * lambda1 * vds
        vdst2 = (2 - vdst) * vdst
        vdstg = -vdst * nv / safe_vgon
        ivdst1 = csat * (2 - vdst - vdst)
        gm_lin = gm * vdst2 + ivdst1 * vdstg
        gds_lin = gds * vdst2 + ivdst1 * (1 / safe_vdsat + vdstg * sigma)
        gmbs_lin = gmbs * vdst2 + ivdst1 * vdstg * vonbm
        out = [torch.where(on, torch.where(linear, lin, sat), zero)
               for lin, sat in ((gm_lin, gm), (gds_lin, gds), (gmbs_lin, gmbs))]
        return cdrain, *out

    @staticmethod
    def current(vgs: Tensor, vds: Tensor, vbs: Tensor, p: dict, d: dict) -> tuple[Tensor, Tensor, Tensor]:
        """mos6load.c's n-th power law: type-normalised drain current, von and vdsat for vds >= 0."""
        cdrain, von, vdsat, _ = Mos6._nth_power(vgs, vds, vbs, p, d)
        return cdrain, von, vdsat

    @staticmethod
    def _nth_power(vgs: Tensor, vds: Tensor, vbs: Tensor, p: dict, d: dict):
        """cdrain, von, vdsat and the intermediate values the conductances need."""
        phi, sqphi = d["phi"], d["sqphi"]
        below = vbs <= 0
        sarg = torch.where(below, torch.sqrt(torch.clamp(phi - vbs, min=0.0)),
                           torch.clamp(sqphi - vbs / (sqphi + sqphi), min=0.0))
        von = d["von0"] + d["gamma"] * sarg - d["gamma1"] * vbs - d["sigma"] * vds
        vgon = vgs - von
        on = vgon > 0
        # vgon^n as exp(n log vgon), ngspice's form; log(1) where cut off keeps gradients finite
        log_vgon = torch.log(torch.where(on, vgon, torch.ones_like(vgon)))
        zero = torch.zeros_like(vgon)
        vdsat = torch.where(on, p["kv"] * torch.exp(log_vgon * p["nv"]), zero)
        idsat = d["beta"] * torch.exp(log_vgon * p["nc"])
        lam = d["lambda0"] - p["lambda1"] * vbs
        csat = idsat * (1 + lam * vds)
        linear = vdsat > vds
        vdst = vds / torch.where(linear, vdsat, torch.ones_like(vdsat))  # used where linear only
        cdrain = torch.where(on, torch.where(linear, csat * (2 - vdst) * vdst, csat), zero)
        return cdrain, von, vdsat, (vgon, vdsat, idsat, csat, lam, vdst, linear, below, sarg)


MOS6: Device = Mos6()
