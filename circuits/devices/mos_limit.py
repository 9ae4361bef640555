"""MOSFET Newton limiting as mos1load.c (also mos2load.c, mos3load.c, mos6load.c) does it: fetlim on
the gate voltage of the conducting side, limvds on vds, pnjlim on the forward-biased bulk junction."""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.devices.junction import THERMAL_VOLTAGE, critical_voltage, fetlim, limvds, pnjlim

__all__ = ["limit_channel", "limit_mosfet", "start_mosfet", "off_mosfet"]


def _normalised(u: Tensor, tp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Type-normalised (vgs, vds, vbs) of local unknowns u = [vd, vg, vs, vb, ...]."""
    vd, vg, vs, vb = u[..., 0], u[..., 1], u[..., 2], u[..., 3]
    return tp * (vg - vs), tp * (vd - vs), tp * (vb - vs)


def _at(u: Tensor, tp: Tensor, vgs: Tensor, vds: Tensor, vbs: Tensor) -> Tensor:
    """A linearisation point with these normalised voltages, the source at 0 (the equations depend
    on voltage differences only; small values keep the forward differences' steps small)."""
    point = torch.stack((tp * vds, tp * vgs, torch.zeros_like(vgs), tp * vbs), -1)
    return torch.cat([point, u[..., 4:]], -1) if u.shape[-1] > 4 else point


def _von(vbs: Tensor, vds: Tensor, d: dict) -> Tensor:
    """Threshold at bulk bias vbs and |vds| (type-normalised, the mode's orientation), as the loads
    compute von for the next limiting (mos6 also lowers it by GAMMA1 vbs and SIGMA vds)."""
    sq = d["sqphi"]
    sarg = torch.where(vbs <= 0, torch.sqrt(torch.clamp(d["phi"] - vbs, min=0.0)),
                       torch.clamp(sq - vbs / (sq + sq), min=0.0))
    base = d["von0"] if "von0" in d else d["vbi"]
    von = base + d["gamma"] * sarg
    if "sigma" in d:
        von = von - d["gamma1"] * vbs - d["sigma"] * vds
    return von


def limit_channel(vgs: Tensor, vds: Tensor, vgs0: Tensor, vds0: Tensor, von: Tensor) -> tuple[Tensor, Tensor]:
    """The loads' gate and drain limiting of type-normalised (vgs, vds) after a linearisation at
    (vgs0, vds0): fetlim on the gate voltage of the conducting side, then limvds."""
    vgd, vgd0 = vgs - vds, vgs0 - vds0
    # where a limiter keeps its input, the unknowns' own differences are kept (not re-derived sums)
    vgs_f = fetlim(vgs, vgs0, von)
    vds_f = limvds(torch.where(vgs_f == vgs, vds, vgs_f - vgd), vds0)
    vgd_r = fetlim(vgd, vgd0, von)
    vds_r = -limvds(-torch.where(vgd_r == vgd, vds, vgs - vgd_r), -vds0)
    vgs_r = torch.where((vgd_r == vgd) & (vds_r == vds), vgs, vgd_r + vds_r)
    forward = vds0 >= 0
    return torch.where(forward, vgs_f, vgs_r), torch.where(forward, vds_f, vds_r)


def limit_mosfet(u: Tensor, u_old: Tensor, p: dict, d: dict) -> Tensor:
    """The limited local unknowns for iterate u after a linearisation at u_old."""
    tp = p["polarity"]
    vgs, vds, vbs = _normalised(u, tp)
    vgs0, vds0, vbs0 = _normalised(u_old, tp)
    forward = vds0 >= 0
    von = _von(torch.where(forward, vbs0, vbs0 - vds0), vds0.abs(), d)
    vgs_l, vds_l = limit_channel(vgs, vds, vgs0, vds0, von)
    vt = THERMAL_VOLTAGE
    # vcrit from the saturation currents (mos6: without m, "iss_vcrit"/"isd_vcrit")
    vbs_s = pnjlim(vbs, vbs0, vt, critical_voltage(d.get("iss_vcrit", d["iss"]), vt))
    vbd = vbs - vds
    vbd_l = pnjlim(vbd, vbs0 - vds0, vt, critical_voltage(d.get("isd_vcrit", d["isd"]), vt))
    vbs_d = torch.where((vbd_l == vbd) & (vds_l == vds), vbs, vbd_l + vds_l)
    vbs_l = torch.where(vds_l >= 0, vbs_s, vbs_d)
    if torch.equal(vgs_l, vgs) and torch.equal(vds_l, vds) and torch.equal(vbs_l, vbs):
        return u
    return _at(u, tp, vgs_l, vds_l, vbs_l)


def start_mosfet(u: Tensor, p: dict, d: dict) -> Tensor:
    """mos1load.c's MODEINITJCT: vbs = -1, vgs = vto, vds = 0 (type-normalised)."""
    tp = p["polarity"]
    vgs = _normalised(u, tp)[0]
    return _at(u, tp, (tp * d["vto"]).expand_as(vgs), torch.zeros_like(vgs), torch.full_like(vgs, -1.0))


def off_mosfet(u: Tensor, p: dict) -> Tensor:
    """The loads' OFF (MODEINITJCT and MODEINITFIX): vbs = vgs = vds = 0."""
    zero = torch.zeros_like(u[..., 0])
    return _at(u, p["polarity"], zero, zero, zero)
