"""MOSFET level 1 (Shichman-Hodges) as ngspice-39's mos1 computes it (mos1load.c, mos1temp.c) at 27 C.

Drain current with body effect, the bulk-drain and bulk-source junction diodes (IS or JS with AD/AS,
plus gmin), their depletion charges (CBD/CBS or CJ with AD/AS, CJSW with PD/PS; MJ MJSW PB FC), the
overlap capacitances and Meyer's gate capacitances from TOX (devsup.c's DEVqmeyer).  With TOX given,
KP follows from UO and, with NSUB, PHI GAMMA and VTO from NSUB NSS TPG where not given (mos1temp.c).

Meyer's capacitances are not derivatives of one charge function, so ngspice integrates dq = C(v) dv
step by step.  Here a MOSFET with TOX has three internal states, the time derivatives w of vgs, vgd and
vgb times tstep (state equations tstep d(v)/dt = w: w is of the order of the voltages, so the voltage
tolerance suits it), and its Meyer gate currents are C(v) w / tstep: the same equation i = C(v) dv/dt,
discretised by the solver's own method.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from circuits.devices.base import Device, DeviceEval, register
from circuits.devices.mos_limit import limit_mosfet, off_mosfet, start_mosfet
from circuits.devices.junction import _EXP_LIMIT, GMIN, THERMAL_VOLTAGE, depletion_charge, limited_exp
from circuits.errors import ConfigError

_NO_RES = "series resistances are not modelled; add explicit R elements"
_DRAIN_TO_SOURCE = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)
_CHARGE = 1.6021766208e-19  # ngspice's const.h
_EPS_OX = 3.9 * 8.854214871e-12
_EPS_SI = 11.70 * 8.854214871e-12
_T = 300.15
_EGFET = 1.16 - (7.02e-4 * _T * _T) / (_T + 1108)  # band gap at the nominal temperature
_MAGIC_VDS = 0.025  # DEVqmeyer's floor on vdsat
_MEYER_STATES = ("dvgs", "dvgd", "dvgb")  # d/dt of vg - vs, vg - vd, vg - vb (physical polarity)
_NAN = math.nan  # default meaning "not given": ngspice derives or defaults the value


def _given(x: Tensor) -> Tensor:
    return ~torch.isnan(x)


def _or(x: Tensor, default: Tensor | float) -> Tensor:
    """x where given, else default."""
    return torch.where(_given(x), x, torch.as_tensor(default, dtype=x.dtype))


def meyer_half(vgs: Tensor, vgd: Tensor, von: Tensor, vdsat: Tensor, phi: Tensor, cox: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
    """ngspice's DEVqmeyer: half of Meyer's (cgs, cgd, cgb) in the mode's orientation."""
    vgst = vgs - von
    vdsat = torch.clamp(vdsat, min=_MAGIC_VDS)
    vds = vgs - vgd
    vddif = 2.0 * vdsat - vds
    vddif1 = vdsat - vds
    vddif2 = vddif * vddif
    below = vds < vdsat  # not saturated: cgd > 0
    frac_d = torch.where(below, 1.0 - vdsat * vdsat / vddif2, torch.zeros_like(vds))
    frac_s = torch.where(below, 1.0 - vddif1 * vddif1 / vddif2, torch.ones_like(vds))
    zero = torch.zeros_like(vgst)
    # depletion (-phi < vgst <= 0): cgs ramps up from 0 at vgst = -phi/2 to cox/3 at vgst = 0
    cgs_dep = vgst * cox / (1.5 * phi) + cox / 3
    cgb_dep = -vgst * cox / (2 * phi)
    accum, weak, dep = vgst <= -phi, vgst <= -phi / 2, vgst <= 0
    cgb = torch.where(accum, cox / 2, torch.where(dep, cgb_dep, zero))
    base = torch.where(dep, cgs_dep, cox / 3)
    cgs = torch.where(weak, zero, base * frac_s)
    cgd = torch.where(weak, zero, base * frac_d)
    return cgs, cgd, cgb


def junction_and_overlap_constants(p: dict, d: dict, leff: Tensor, weff: Tensor) -> None:
    """Junction saturation currents, zero-bias junction and overlap capacitances (mos1/2/3temp.c,
    the same at every level), into d."""
    m = p["m"]
    # junction saturation currents: JS per area only when JS, AD and AS are all nonzero
    dens = (p["js"] != 0) & (p["ad"] != 0) & (p["as"] != 0)
    d["isd"] = torch.where(dens, p["js"] * m * p["ad"], m * p["is"])
    d["iss"] = torch.where(dens, p["js"] * m * p["as"], m * p["is"])
    # zero-bias junction capacitances: CBD/CBS when given, else CJ times the area; CJSW per perimeter
    d["czbd"] = torch.where(_given(p["cbd"]), _or(p["cbd"], 0.0) * m, p["cj"] * m * p["ad"])
    d["czbs"] = torch.where(_given(p["cbs"]), _or(p["cbs"], 0.0) * m, p["cj"] * m * p["as"])
    d["czbdsw"] = p["cjsw"] * p["pd"] * m
    d["czbssw"] = p["cjsw"] * p["ps"] * m
    d["junction_caps"] = bool(any((d[k] != 0).any() for k in ("czbd", "czbs", "czbdsw", "czbssw")))
    d["cgs"] = p["cgso"] * m * weff
    d["cgd"] = p["cgdo"] * m * weff
    d["cgb"] = p["cgbo"] * m * leff


@register
class Mos1(Device):
    """M d g s b model [w= l= m= ad= as= pd= ps=]: level-1 drain current with source/drain swap and
    body effect, bulk junctions and ngspice's capacitances.

    NMOS and PMOS share one device (polarity +1/-1 comes from the model type), so every MOSFET of
    a circuit is evaluated in one vectorised call (one call per state layout: with or without TOX).
    """

    letter = "m"
    family = "MOSFET"
    model_types = ("nmos", "pmos")
    terminals = 4
    levels = (1, 2, 3, 6)
    batched_differences = True
    limits = True
    model_params = {"level": 1.0, "vto": _NAN, "kp": _NAN, "gamma": _NAN, "phi": _NAN, "lambda": 0.0,
                    "ld": 0.0, "cgso": 0.0, "cgdo": 0.0, "cgbo": 0.0,
                    "is": 1e-14, "js": 0.0, "cbd": _NAN, "cbs": _NAN, "cj": 0.0, "cjsw": 0.0,
                    "mj": 0.5, "mjsw": 0.5, "pb": 0.8, "fc": 0.5,
                    "tox": _NAN, "uo": 600.0, "nsub": _NAN, "nss": 0.0, "tpg": 1.0}
    # nrd/nrs only matter with RSH, which must be 0
    instance_params = {"w": 1e-4, "l": 1e-4, "m": 1.0, "ad": 0.0, "as": 0.0, "pd": 0.0, "ps": 0.0,
                       "nrd": 1.0, "nrs": 1.0, "off": 0.0}
    flags = ("off",)  # written as a bare word in ngspice decks
    aliases = {"vt0": "vto", "u0": "uo"}
    inert_params = {"rd": 0.0, "rs": 0.0, "rsh": 0.0, "tnom": 27.0,
                    **{k: None for k in ("kf", "af", "nlev", "gdsnoi")}}
    rejected_params = {**{k: _NO_RES for k in ("rd", "rs", "rsh")},
                       "tnom": "only the nominal temperature 27 C is supported",
                       **{k: "MOSFET initial conditions are not supported; use .ic on the nodes"
                          for k in ("ic", "icvds", "icvgs", "icvbs")},
                       **{k: "instance temperatures are not supported (27 C only)" for k in ("temp", "dtemp")}}

    def variant(self, params) -> Device:
        """The device of the card's ``level=`` (ngspice's mos1, mos2, mos3 or mos6)."""
        level = params.get("level")
        n = 1 if level is None else int(level.value())
        if n == 1:
            return self
        from circuits.devices.mos2 import MOS2
        from circuits.devices.mos3 import MOS3
        from circuits.devices.mos6 import MOS6
        return {2: MOS2, 3: MOS3, 6: MOS6}[n]

    def limit(self, u, u_old, p, ctx=None):
        """fetlim, limvds and pnjlim as mos1load.c (`circuits.devices.mos_limit`)."""
        return limit_mosfet(u, u_old, p, self.derived(p))

    def limit_start(self, u, p, ctx=None):
        """MODEINITJCT: vbs = -1, vgs = vto, vds = 0."""
        return start_mosfet(u, p, self.derived(p))

    def off_point(self, u, p, ctx=None):
        """mos1load.c's OFF in MODEINITJCT and MODEINITFIX: vbs = vgs = vds = 0."""
        return off_mosfet(u, p)

    def states_for(self, element, model=None) -> tuple[str, ...]:
        """Meyer's derivative states when the model gives TOX (a nonzero oxide capacitance)."""
        return _MEYER_STATES if model is not None and "tox" in model.params else ()

    def model_type_params(self, model_type: str) -> dict[str, float]:
        return {"polarity": 1.0 if model_type == "nmos" else -1.0}

    def prepare(self, elements, env, tran):
        """The time scale of the Meyer states (tstep); derived constants are computed lazily."""
        return float(tran["tstep"])

    @staticmethod
    def derived(p: dict) -> dict:
        """Per-instance constants (cached in the parameter dict): mos1temp.c's model defaulting at
        27 C, then the drain-current, junction and capacitance constants of mos1load.c.

        The cache is keyed by grad mode: constants first computed under no_grad (a Jacobian) carry no
        graph to W, L ... and must not be reused where gradients are needed."""
        key = "_derived" if torch.is_grad_enabled() else "_derived_nograd"
        d = p.get(key)
        if d is None:
            d = Mos1._model_defaults(p)
            m, tp = p["m"], p["polarity"]
            sqphi = torch.sqrt(d["phi"])
            leff = p["l"] - 2 * p["ld"]
            beta = d["kp"] * m * p["w"] / leff
            d.update({"sqphi": sqphi, "von0": tp * d["vto"] - d["gamma"] * sqphi,
                      "beta": beta, "beta_lambda": beta * p["lambda"],
                      "body_effect": bool((d["gamma"] != 0).any()),
                      "cox_total": d["cox"] * leff * m * p["w"]})
            junction_and_overlap_constants(p, d, leff, p["w"])
            d["has_caps"] = bool((p["cgso"] != 0).any() or (p["cgdo"] != 0).any() or (p["cgbo"] != 0).any()
                                 or d["junction_caps"])
            p[key] = d
        return d

    @staticmethod
    def _model_defaults(p: dict, ni: float = 1.45e16) -> dict:
        """KP, PHI, GAMMA, VTO and the oxide capacitance per area, as mos1temp.c defaults them
        (ni: the intrinsic density in m^-3 that NSUB must exceed; mos3 scales it to 27 C).  A level
        without KP (mos6) gets kp None."""
        tp = p["polarity"]
        tox = p["tox"]
        cox = torch.where(_given(tox) & (_or(tox, 1.0) != 0), _EPS_OX / _or(tox, 1.0), torch.zeros_like(tox))
        with_tox = cox != 0
        safe_cox = torch.where(with_tox, cox, torch.ones_like(cox))
        kp = None if "kp" not in p else torch.where(
            _given(p["kp"]), p["kp"], torch.where(with_tox, p["uo"] * cox * 1e-4, torch.full_like(cox, 2e-5)))
        nsub = _or(p["nsub"], 0.0)
        from_nsub = with_tox & _given(p["nsub"])
        if bool((from_nsub & (nsub * 1e6 <= ni)).any()):
            raise ConfigError(f"MOSFET model: NSUB is below the intrinsic density {ni * 1e-6:.4g} cm^-3 (Nsub < Ni)")
        safe_nsub = torch.where(from_nsub, nsub, torch.full_like(nsub, 1e17))
        phi_nsub = torch.clamp(2 * THERMAL_VOLTAGE * torch.log(safe_nsub * 1e6 / ni), min=0.1)
        phi = torch.where(_given(p["phi"]), p["phi"], torch.where(from_nsub, phi_nsub, torch.full_like(cox, 0.6)))
        if bool((phi <= 0).any()):
            raise ConfigError("MOSFET model: PHI is not positive")
        gamma_nsub = torch.sqrt(2 * _EPS_SI * _CHARGE * safe_nsub * 1e6) / safe_cox
        gamma = torch.where(_given(p["gamma"]), p["gamma"],
                            torch.where(from_nsub, gamma_nsub, torch.zeros_like(cox)))
        tpg = torch.trunc(p["tpg"])  # an integer parameter in ngspice
        fermis = tp * 0.5 * phi
        fermig = tp * tpg * 0.5 * _EGFET
        wkfng = torch.where(tpg != 0, 3.25 + 0.5 * _EGFET - fermig, torch.full_like(phi, 3.2))
        wkfngs = wkfng - (3.25 + 0.5 * _EGFET + fermis)
        vfb = wkfngs - p["nss"] * 1e4 * _CHARGE / safe_cox
        vto_nsub = vfb + tp * (gamma * torch.sqrt(phi) + phi)
        vto = torch.where(_given(p["vto"]), p["vto"], torch.where(from_nsub, vto_nsub, torch.zeros_like(cox)))
        return {"kp": kp, "phi": phi, "gamma": gamma, "vto": vto, "cox": cox,
                "nsub": torch.where(from_nsub, nsub, torch.zeros_like(nsub))}

    @staticmethod
    def drain_current(vgs, vds, vbs, p, d, derivatives: bool = True):
        """Type-normalised drain current and (gm, gds, gmbs) for vds >= 0 (ngspice mos1 normal mode).

        With derivatives=False only the current is computed (the three conductances are None).
        """
        gamma, sqphi, lam = d["gamma"], d["sqphi"], p["lambda"]
        below = vbs <= 0
        root = torch.sqrt(torch.clamp(d["phi"] - vbs, min=1e-30))
        linear_arg = sqphi - vbs / (2 * sqphi)
        sarg = torch.where(below, root, torch.clamp(linear_arg, min=0.0))
        vgst = vgs - (d["von0"] + gamma * sarg)
        beta = d["beta"]
        betap = beta * (1 + lam * vds)
        on = vgst > 0
        sat = vgst <= vds
        zero = torch.zeros_like(vgst)
        ids = torch.where(on, betap * torch.where(sat, 0.5 * vgst * vgst, vds * (vgst - 0.5 * vds)), zero)
        if not derivatives:
            return ids, None, None, None
        gm = torch.where(on, betap * torch.where(sat, vgst, vds), zero)
        gds = torch.where(on, torch.where(sat, 0.5 * beta * lam * vgst * vgst,
                                          betap * (vgst - vds) + beta * lam * vds * (vgst - 0.5 * vds)), zero)
        dsarg = torch.where(below, -0.5 / root,
                            torch.where(linear_arg > 0, -0.5 / sqphi, torch.zeros_like(vbs)))
        gmbs = -gm * gamma * dsarg
        return ids, gm, gds, gmbs

    def _drain(self, v, p, derivatives: bool = True):
        d = self.derived(p)
        tp = p["polarity"]
        vd, vg, vs, vb = v.unbind(-1)
        vds, vgs, vbs = tp * (vd - vs), tp * (vg - vs), tp * (vb - vs)
        normal = vds >= 0
        # reverse mode: the source acts as drain, so use vgd, vsd and vbd
        ids, gm, gds, gmbs = self.drain_current(torch.where(normal, vgs, vgs - vds), torch.abs(vds),
                                                torch.where(normal, vbs, vbs - vds), p, d, derivatives)
        return d, normal, tp * torch.where(normal, ids, -ids), (gm, gds, gmbs), (vd, vg, vs, vb)

    @staticmethod
    def _drain_current_only(v, p, d):
        """Drain current alone, in few and cheap tensor ops (it runs every Newton iteration; on CPU
        a comparison or torch.where costs several times an arithmetic op).

        With vgst clamped at 0 and m = min(vgst, |vds|), ids = beta (1 + lambda |vds|) m (vgst - m/2)
        covers cut-off (m = 0), saturation (m = vgst) and the linear region (m = |vds|) at once;
        in reverse mode (vds < 0) the gate drive is vgd = vgs - vds.  Equal to `drain_current`
        (tested)."""
        tp = p["polarity"]
        vd, vg, vs, vb = v.unbind(-1)
        v_ds = vd - vs
        vds = tp * v_ds
        reverse_shift = vds.clamp(max=0.0)  # vds in reverse mode, else 0
        vgs_eff = tp * (vg - vs) - reverse_shift
        vds_eff = vds.abs()
        if d["body_effect"]:
            vbs_eff = tp * (vb - vs) - reverse_shift
            root = torch.sqrt(torch.clamp(d["phi"] - vbs_eff, min=1e-30))
            linear_arg = torch.clamp(d["sqphi"] - vbs_eff / (2 * d["sqphi"]), min=0.0)
            vgs_eff = vgs_eff - d["gamma"] * torch.where(vbs_eff <= 0, root, linear_arg)
        vgst = torch.clamp(vgs_eff - d["von0"], min=0.0)
        m = torch.minimum(vgst, vds_eff)
        ids = torch.addcmul(d["beta"], d["beta_lambda"], vds_eff) * m * torch.add(vgst, m, alpha=-0.5)
        # current into the drain: tp * sign(vds) * ids (ids = 0 where vds = 0)
        return torch.sign(v_ds) * ids, (vd, vg, vs, vb)

    @staticmethod
    def junction_currents(vbs: Tensor, vbd: Tensor, d: dict, derivatives: bool = False):
        """Type-normalised bulk-source and bulk-drain diode currents (with gmin), mos1load.c's form;
        with derivatives also their conductances.  d["gmin"], where given, replaces ngspice's gmin
        (mos6 scales it with m)."""
        vt = THERMAL_VOLTAGE
        gmin = d.get("gmin", GMIN)
        out = []
        for vj, isat in ((vbs, d["iss"]), (vbd, d["isd"])):
            reverse = vj <= -3 * vt
            # linear beyond 40 vt (> 1e3 A at IS = 1e-14): ngspice's pnjlim keeps its Newton there, this keeps ours finite
            ev = limited_exp(vj / vt)
            cur = torch.where(reverse, gmin * vj - isat, isat * (ev - 1) + gmin * vj)
            slope = torch.exp(torch.clamp(vj / vt, max=_EXP_LIMIT))
            g = (torch.where(reverse, gmin * torch.ones_like(vj), isat * slope / vt + gmin)
                 if derivatives else None)
            out.append((cur, g))
        return out

    @staticmethod
    def junction_charges(vbs: Tensor, vbd: Tensor, p: dict, d: dict) -> tuple[Tensor, Tensor]:
        """Type-normalised depletion charges of the bulk-source and bulk-drain junctions."""
        pb, mj, mjsw, fc = p["pb"], p["mj"], p["mjsw"], p["fc"]
        qbs = depletion_charge(vbs, d["czbs"], pb, mj, fc) + depletion_charge(vbs, d["czbssw"], pb, mjsw, fc)
        qbd = depletion_charge(vbd, d["czbd"], pb, mj, fc) + depletion_charge(vbd, d["czbdsw"], pb, mjsw, fc)
        return qbs, qbd

    def _meyer_caps(self, v: Tensor, p: dict, d: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Full Meyer capacitances (cgs, cgd, cgb) at v: twice DEVqmeyer's halves, drain and
        source swapped in reverse mode as mos1load.c does."""
        tp = p["polarity"]
        vd, vg, vs, vb = v.unbind(-1)
        vds, vgs, vbs = tp * (vd - vs), tp * (vg - vs), tp * (vb - vs)
        normal = vds >= 0
        vgd = vgs - vds
        vbx = torch.where(normal, vbs, vbs - vds)  # vbs, or vbd in reverse mode
        sq = d["sqphi"]
        sarg = torch.where(vbx <= 0, torch.sqrt(torch.clamp(d["phi"] - vbx, min=0.0)),
                           torch.clamp(sq - vbx / (sq + sq), min=0.0))
        von = d["von0"] + d["gamma"] * sarg
        v_on, v_off = torch.where(normal, vgs, vgd), torch.where(normal, vgd, vgs)
        vdsat = torch.clamp(v_on - von, min=0.0)
        c_on, c_off, cgb = meyer_half(v_on, v_off, von, vdsat, d["phi"], d["cox_total"])
        cgs = torch.where(normal, c_on, c_off)
        cgd = torch.where(normal, c_off, c_on)
        return 2 * cgs, 2 * cgd, 2 * cgb

    def evaluate(self, v, s, t, p, ctx=None):
        d = self.derived(p)
        i_d, (vd, vg, vs, vb) = self._drain_current_only(v, p, d)
        tp = p["polarity"]
        vbs, vbd = tp * (vb - vs), tp * (vb - vd)
        (cbs, _), (cbd, _) = self.junction_currents(vbs, vbd, d)
        # the junction diodes: current into the bulk tp (cbs + cbd), out of source and drain
        zero = torch.zeros_like(i_d)
        current = torch.stack((i_d - tp * cbd, zero, -i_d - tp * cbs, tp * (cbs + cbd)), -1)
        meyer = s.shape[-1] == len(_MEYER_STATES)
        if not d["has_caps"] and not meyer:
            return DeviceEval(i=current)
        qgs = d["cgs"] * (vg - vs)
        qgd = d["cgd"] * (vg - vd)
        qgb = d["cgb"] * (vg - vb)
        charge = torch.stack((-qgd, qgs + qgd + qgb, -qgs, -qgb), -1)
        if d["junction_caps"]:
            qbs, qbd = self.junction_charges(vbs, vbd, p, d)
            charge = charge + tp.unsqueeze(-1) * torch.stack((-qbd, zero, -qbs, qbs + qbd), -1)
        if not meyer:
            return DeviceEval(i=current, q=charge)
        cgs, cgd, cgb = self._meyer_caps(v, p, d)
        tau = ctx if ctx is not None else 1.0
        w_gs, w_gd, w_gb = (s / tau).unbind(-1)
        i_gs, i_gd, i_gb = cgs * w_gs, cgd * w_gd, cgb * w_gb
        current = current + torch.stack((-i_gd, i_gs + i_gd + i_gb, -i_gs, -i_gb), -1)
        return DeviceEval(i=current, q=charge, fs=-s, qs=tau * torch.stack((vg - vs, vg - vd, vg - vb), -1))

    def local_jacobian(self, v, s, t, p, ctx=None):
        """Analytic: drain row (gds, gm, -(gm+gds+gmbs), gmbs) in normal mode, mirrored in reverse,
        plus the junction conductances; forward differences with junction or Meyer capacitances."""
        d = self.derived(p)
        if d["junction_caps"] or s.shape[-1]:
            return super().local_jacobian(v, s, t, p, ctx)
        d, normal, i_d, (gm, gds, gmbs), (vd, vg, vs, vb) = self._drain(v, p)
        tp = p["polarity"]
        (cbs, gbs), (cbd, gbd) = self.junction_currents(tp * (vb - vs), tp * (vb - vd), d, derivatives=True)
        gsum = gm + gds + gmbs
        row_d = torch.where(normal.unsqueeze(-1), torch.stack((gds, gm, -gsum, gmbs), -1),
                            torch.stack((gsum, -gm, -gds, -gmbs), -1))
        zero = torch.zeros_like(i_d)
        zero_row = torch.zeros_like(row_d)
        # junctions: d(i_b)/d(v_b) = gbs + gbd; the drain loses gbd (vb - vd), the source gbs (vb - vs)
        jd = torch.stack((gbd, zero, zero, -gbd), -1)
        js = torch.stack((zero, zero, gbs, -gbs), -1)
        jb = torch.stack((-gbd, zero, -gbs, gbs + gbd), -1)
        jf = torch.stack((row_d + jd, zero_row, -row_d + js, jb), -2)
        cgs, cgd, cgb = (torch.broadcast_to(d[k], i_d.shape) for k in ("cgs", "cgd", "cgb"))
        jq = torch.stack((torch.stack((cgd, -cgd, zero, zero), -1),
                          torch.stack((-cgd, cgs + cgd + cgb, -cgs, -cgb), -1),
                          torch.stack((zero, -cgs, cgs, zero), -1),
                          torch.stack((zero, -cgb, zero, cgb), -1)), -2)
        current = torch.stack((i_d - tp * cbd, zero, -i_d - tp * cbs, tp * (cbs + cbd)), -1)
        charge = (jq @ v.unsqueeze(-1)).squeeze(-1) if d["has_caps"] else None
        return DeviceEval(i=current, q=charge), jf, jq
