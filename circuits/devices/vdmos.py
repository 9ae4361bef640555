"""Vertical power MOSFET: ngspice-39's VDMOS model (vdmosload.c, vdmostemp.c, vdmosset.c) at 27 C.

``M d g s model`` with ``.model NAME VDMOS (...)`` (``pchan`` for P channel).  The drain current is
ngspice's Shichman-Hodges form with a softplus weak-inversion overdrive (KSUBTHRES, SUBSHIFT), mobility
reduction THETA, channel-length modulation LAMBDA and the triode multiplier MTRIODE; gate-source
capacitance CGS (constant) and the nonlinear gate-drain capacitance of CGDMIN, CGDMAX and A; the body
diode (IS N CJO VJ M FC TT BV IBV NBV, series RB) from the source to the external drain; the drain-source
shunt RDS (1e-15 S when not given); series RD, RG, RS.  The instance multiplier m scales KP, IS, CJO and
divides RD RG RS RB RDS, and does not scale CGS and the CGD capacitance (as ngspice-39 does).

ngspice adds an internal node for each of RD, RG, RS and RB that is positive; so does this device: each
is an internal state, the node's voltage, whose equation is the node's KCL (the model card decides
which exist).  ngspice integrates the gate capacitances as dq = C(v) dv step by step; here their
charges are the exact integrals of the same C(v) (the same currents C(v) dv/dt).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from circuits.devices.base import Device, DeviceEval, register
from circuits.devices.junction import (GMIN, THERMAL_VOLTAGE, critical_voltage, depletion_charge_from,
                                       depletion_coefficients, junction_current, limited_exp, pnjlim)
from circuits.devices.mos_limit import limit_channel
from circuits.errors import ConfigError

_NAN = math.nan  # default meaning "not given"
_RESISTORS = (("rd", "drain"), ("rg", "gate"), ("rs", "source"), ("rb", "body"))
_EPSMIN = 1e-28  # ngspice's CKTepsmin: the floor of IS
_RELTOL = 1e-3  # ngspice's default reltol: the breakdown knee's iteration stops within it
_LN2 = math.log(2.0)
_TEMPERATURE_ONLY = ("tcvth", "mu", "texp0", "texp1", "trd1", "trd2", "trg1", "trg2", "trs1", "trs2", "trb1",
                     "trb2", "tksubthres1", "tksubthres2", "eg", "xti")
_THERMAL = ("rthjc", "rthca", "cthj")  # self-heating: only with an instance's thermal nodes
_SAFE_OPERATING_AREA = ("vgs_max", "vgd_max", "vds_max", "vgsr_max", "vgdr_max", "pd_max", "id_max", "idr_max",
                        "te_max", "rth_ext", "derating")


def _given(x: Tensor) -> Tensor:
    return ~torch.isnan(x)


def _log_cosh(x: Tensor) -> Tensor:
    ax = x.abs()
    return ax + torch.log1p(torch.exp(-2 * ax)) - _LN2


def gate_drain_charge(vgd: Tensor, cgdmin: Tensor, cgdmax: Tensor, a: Tensor) -> Tensor:
    """The integral from 0 of devsup.c's DevCapVDMOS capacitance: C(v) = s tanh(a v) + y for v > 0,
    s atan(a v) + y below, with s = (cgdmax - cgdmin) / (1 + pi/2) and y = cgdmax - s (type-normalised)."""
    s = (cgdmax - cgdmin) / (1 + math.pi / 2)
    y = cgdmax - s
    nonzero = a != 0
    a_safe = torch.where(nonzero, a, torch.ones_like(a))
    av = a_safe * vgd
    above = _log_cosh(av) / a_safe
    below = vgd * torch.atan(av) - torch.log1p(av * av) / (2 * a_safe)
    shape = torch.where(nonzero, torch.where(vgd > 0, above, below), torch.zeros_like(vgd))
    return y * vgd + s * shape


def breakdown_knee(bv: Tensor, ibv: Tensor, isat: Tensor, nbv_vt: Tensor) -> Tensor:
    """vdmostemp.c's tBrkdwnV: bv when ibv < isat bv / vt, else its fixed point iterated until the
    reverse current at -bv matches ibv within reltol (25 iterations at most)."""
    vt = THERMAL_VOLTAGE
    xbv = bv - nbv_vt * torch.log(1 + ibv / isat)
    done = torch.zeros_like(xbv, dtype=torch.bool)
    for _ in range(25):
        new = bv - nbv_vt * torch.log(ibv / isat + 1 - xbv / vt)
        xbv = torch.where(done, xbv, new)
        xcbv = isat * (torch.exp((bv - xbv) / nbv_vt) - 1 + xbv / vt)
        done = done | ((xcbv - ibv).abs() <= _RELTOL * ibv)
        if bool(done.all()):
            break
    return torch.where(ibv < isat * bv / vt, bv, xbv)


@register
class Vdmos(Device):
    """M d g s model [m=] [off]: ngspice's VDMOS (see the module docstring)."""

    letter = "m"
    family = "VDMOS"
    model_types = ("vdmos",)
    terminals = 3
    batched_differences = True
    limits = True
    model_params = {"pchan": 0.0, "nchan": 0.0,
                    "vto": 0.0, "kp": 1.0, "phi": 0.6, "lambda": 0.0, "theta": 0.0, "mtriode": 1.0,
                    "subshift": 0.0, "ksubthres": 0.1,
                    "rd": 0.0, "rs": 0.0, "rg": 0.0, "rds": _NAN,
                    "cgdmin": 0.0, "cgdmax": 0.0, "a": 1.0, "cgs": 0.0,
                    "is": 1e-14, "n": 1.0, "rb": 0.0, "tt": 0.0, "cjo": 0.0, "vj": 0.8, "mj": 0.5, "fc": 0.5,
                    "bv": _NAN, "ibv": 1e-10, "nbv": 1.0}
    instance_params = {"m": 1.0, "off": 0.0}
    flags = ("off",)  # written as a bare word in ngspice decks
    model_flags = ("pchan", "nchan")  # bare words of the .model card (ngspice: pchan anywhere -> P channel)
    model_annotations = ("ron", "vds", "qg", "mfg")  # datasheet notes ngspice drops from the card
    ngspice_names = {"mj": "m"}  # the grading coefficient is VDMOS's "m" (stored as mj: m is the multiplier)
    aliases = {"m": "mj", "vth0": "vto", "vtotc": "tcvth", "bex": "mu"}
    rejected_nodes = {5: "thermal nodes (tj tc): self-heating is not modelled"}
    inert_params = {**{k: None for k in (*_TEMPERATURE_ONLY, *_THERMAL, *_SAFE_OPERATING_AREA, "kf", "af")},
                    "tnom": 27.0}
    rejected_params = {"tnom": "only the nominal temperature 27 C is supported",
                       **{k: "quasi-saturation (RQ, VQ) is not modelled: ngspice's reverse-mode drain resistance "
                             "depends on its Newton history" for k in ("rq", "vq")},
                       **{k: "instance temperatures are not supported (27 C only)" for k in ("temp", "dtemp")},
                       "thermal": "self-heating (thermal) is not modelled",
                       **{k: "VDMOS initial conditions are not supported; use .ic on the nodes"
                          for k in ("ic", "icvds", "icvgs")}}

    def states_for(self, element, model=None) -> tuple[str, ...]:
        """One internal node per series resistance the card makes positive (or gives as an expression)."""
        params = model.params if model is not None else {}
        out = []
        for key, node in _RESISTORS:
            e = params.get(key)
            if e is not None and (not e.is_constant or e.value() > 0):
                out.append(node)
        return tuple(out)

    @staticmethod
    def derived(p: dict, n_states: int) -> dict:
        """Per-instance constants of vdmossetup/vdmostemp at 27 C (cached in p, keyed by grad mode)."""
        key = "_derived" if torch.is_grad_enabled() else "_derived_nograd"
        d = p.get(key)
        if d is not None:
            return d
        m = p["m"]
        index = [0, 1, 2, 0, 1, 2, 2]  # D G S D' G' S' A: local unknowns (D' = D ... without the resistor)
        conductance = {}
        k = 3
        for (name, _), (node, terminal) in zip(_RESISTORS, ((3, 0), (4, 1), (5, 2), (6, 2))):
            r = p[name]
            present = bool((r > 0).any())
            if present and not bool((r > 0).all()):
                raise ConfigError(f"VDMOS: {name.upper()} is positive in some designs and not in others "
                                  "(ngspice adds the internal node only where it is positive)")
            if present:
                index[node] = k
                k += 1
            conductance[name] = m / torch.where(r > 0, r, torch.ones_like(r)) if present else None
        if k - 3 != n_states:
            raise ConfigError("VDMOS: a series resistance given by an expression is 0 in every design")
        slope = p["ksubthres"]
        if bool((slope <= 0).any()):
            raise ConfigError("VDMOS: KSUBTHRES must be positive")
        if bool((p["phi"] <= 0).any()):
            raise ConfigError("VDMOS: PHI is not positive")
        fc = torch.clamp(p["fc"], max=0.95)
        if bool((fc * p["vj"] > 2.5).any()):
            raise ConfigError("VDMOS: FC*VJ above 2.5 (ngspice then changes VJ) is not supported")
        tp = 1 - 2 * (p["pchan"] != 0).to(m.dtype)
        isat = m * torch.clamp(p["is"], min=_EPSMIN)
        vte = p["n"] * THERMAL_VOLTAGE
        rds = p["rds"]
        bv_given = _given(p["bv"])
        bv = torch.where(bv_given, p["bv"].abs(), torch.ones_like(m))
        d = {"index": index, "polarity": tp, "von": tp * p["vto"], "beta": p["kp"] * m,
             "g": conductance,
             "gshunt": torch.where(_given(rds) & (rds > 0), m / torch.where(rds > 0, rds, 1.0), 1e-15),
             "isat": isat, "vte": vte, "vcrit": critical_voltage(isat, vte),
             "dep": depletion_coefficients(m * p["cjo"], p["vj"], p["mj"], fc),
             "bv_given": bv_given, "any_bv": bool(bv_given.any()), "vtebrk": p["nbv"] * THERMAL_VOLTAGE}
        d["xbv"] = breakdown_knee(bv, p["ibv"], isat, d["vtebrk"]) if d["any_bv"] else bv
        p[key] = d
        return d

    @staticmethod
    def _nodes(u: Tensor, d: dict) -> list[Tensor]:
        """The voltages of D G S D' G' S' A from local unknowns u = [vd, vg, vs, internal nodes...]."""
        return [u[..., k] for k in d["index"]]

    def _channel(self, nodes: list[Tensor], p: dict, d: dict) -> Tensor:
        """The drain current into D' (vdmosload.c; vgs and vds at the internal nodes)."""
        tp = d["polarity"]
        _, _, _, dp, gp, sp, _ = nodes
        vgs, vds = tp * (gp - sp), tp * (dp - sp)
        normal = vds >= 0
        slope = p["ksubthres"]
        vgst = torch.where(normal, vgs, vgs - vds) - d["von"]
        vdss = p["mtriode"] * vds.abs()
        # lambda and theta act with the signed vds and vgs, in reverse mode too
        betap = d["beta"] * (1 + p["lambda"] * vds) / (1 + p["theta"] * vgs)
        vgst = slope * torch.logaddexp((vgst - p["subshift"]) / slope, torch.zeros_like(vgst))
        cdrain = betap * torch.where(vgst <= vdss, 0.5 * vgst * vgst, vdss * (vgst - 0.5 * vdss))
        return tp * torch.where(normal, cdrain, -cdrain)

    def _diode(self, vd: Tensor, p: dict, d: dict) -> tuple[Tensor, Tensor]:
        """Body-diode current (with gmin) and charge at the type-normalised voltage vd."""
        cdb = junction_current(vd, d["isat"], d["vte"])
        if d["any_bv"]:
            breakdown = -d["isat"] * limited_exp(-(d["xbv"] + vd) / d["vtebrk"])
            cdb = torch.where(d["bv_given"] & (vd < -d["xbv"]) & (vd < -3 * d["vte"]), breakdown, cdb)
        charge = depletion_charge_from(vd, d["dep"]) + p["tt"] * cdb
        return cdb + GMIN * vd, charge

    def evaluate(self, v, s, t, p, ctx=None):
        d = self.derived(p, s.shape[-1])
        u = torch.cat([v, s], dim=-1)
        nodes = self._nodes(u, d)
        D, G, S, Dp, Gp, Sp, A = nodes
        tp = d["polarity"]
        zero = torch.zeros_like(D)
        cur = [zero] * 7
        chg = [zero] * 7

        def branch(a: int, b: int, i: Tensor, q: Tensor | None = None) -> None:
            cur[a], cur[b] = cur[a] + i, cur[b] - i
            if q is not None:
                chg[a], chg[b] = chg[a] + q, chg[b] - q

        for (name, _), (a, b) in zip(_RESISTORS, ((0, 3), (1, 4), (2, 5), (2, 6))):
            g = d["g"][name]
            if g is not None:
                branch(a, b, g * (nodes[a] - nodes[b]))
        branch(0, 2, d["gshunt"] * (D - S))
        branch(3, 5, self._channel(nodes, p, d))
        cd, qd = self._diode(tp * (A - D), p, d)
        branch(6, 0, tp * cd, tp * qd)
        branch(4, 5, zero, p["cgs"] * (Gp - Sp))
        branch(4, 3, zero, tp * gate_drain_charge(tp * (Gp - Dp), p["cgdmin"], p["cgdmax"], p["a"]))
        n_local = 3 + s.shape[-1]
        cur_l, chg_l = [zero] * n_local, [zero] * n_local
        for k, j in enumerate(d["index"]):
            cur_l[j] = cur_l[j] + cur[k]
            chg_l[j] = chg_l[j] + chg[k]
        i, q = torch.stack(cur_l, -1), torch.stack(chg_l, -1)
        return DeviceEval(i=i[..., :3], q=q[..., :3], fs=i[..., 3:], qs=q[..., 3:])

    # ---------------------------------------------------------------------------------------------
    # Newton limiting (vdmosload.c): fetlim and limvds on the channel, pnjlim on the body diode

    def _point(self, u: Tensor, d: dict, vgs: Tensor, vds: Tensor, vd: Tensor | None) -> Tensor:
        """Local unknowns moved so that the channel sees (vgs, vds) and the diode vd (None: as it is);
        where the diode shares its nodes with the channel, the diode's voltage wins.  Unknowns whose
        voltages are kept are not re-derived (no rounding)."""
        tp = d["polarity"]
        idx = d["index"]
        vgs0, vds0, vd0 = self._voltages(u, d)
        cols = list(u.unbind(-1))
        cols[idx[3]] = torch.where(vds == vds0, cols[idx[3]], cols[idx[5]] + tp * vds)
        cols[idx[4]] = torch.where(vgs == vgs0, cols[idx[4]], cols[idx[5]] + tp * vgs)
        if vd is not None:
            if idx[6] not in {idx[3], idx[4], idx[5]}:
                cols[idx[6]] = torch.where(vd == vd0, cols[idx[6]], cols[idx[0]] + tp * vd)
            else:
                cols[idx[0]] = torch.where(vd == vd0, cols[idx[0]], cols[idx[6]] - tp * vd)
        return torch.stack(cols, -1)

    def _voltages(self, u: Tensor, d: dict) -> tuple[Tensor, Tensor, Tensor]:
        tp = d["polarity"]
        D, _, _, Dp, Gp, Sp, A = self._nodes(u, d)
        return tp * (Gp - Sp), tp * (Dp - Sp), tp * (A - D)

    def limit(self, u, u_old, p, ctx=None):
        d = self.derived(p, u.shape[-1] - 3)
        vgs, vds, vd = self._voltages(u, d)
        vgs0, vds0, vd0 = self._voltages(u_old, d)
        vgs_l, vds_l = limit_channel(vgs, vds, vgs0, vds0, d["von"])
        vd_l = pnjlim(vd, vd0, d["vte"], d["vcrit"])
        if d["any_bv"]:
            xbv, vtebrk = d["xbv"], d["vtebrk"]
            rev = -pnjlim(-(vd + xbv), -(vd0 + xbv), vtebrk, d["vcrit"]) - xbv
            deep = d["bv_given"] & (vd < torch.clamp(-xbv + 10 * vtebrk, max=0.0))
            vd_l = torch.where(deep, rev, vd_l)
        channel_same = torch.equal(vgs_l, vgs) and torch.equal(vds_l, vds)
        diode_same = torch.equal(vd_l, vd)
        if channel_same and diode_same:
            return u
        return self._point(u, d, vgs_l, vds_l, None if diode_same else vd_l)

    def limit_start(self, u, p, ctx=None):
        """MODEINITJCT: vgs = type vto + 0.1, vds = 0, the body diode at vcrit."""
        d = self.derived(p, u.shape[-1] - 3)
        zero = torch.zeros_like(u[..., 0])
        return self._point(u, d, (d["von"] + 0.1).expand_as(zero), zero, d["vcrit"].expand_as(zero))

    def off_point(self, u, p, ctx=None):
        """OFF in MODEINITJCT and MODEINITFIX: vgs = vds = 0 (the body diode is not held)."""
        d = self.derived(p, u.shape[-1] - 3)
        zero = torch.zeros_like(u[..., 0])
        return self._point(u, d, zero, zero, None)
