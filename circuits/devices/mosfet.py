"""MOSFET level 1 (Shichman-Hodges) as ngspice's mos1 computes it, without Meyer capacitances.

Only explicit overlap capacitances (CGSO, CGDO, CGBO) are modelled; bulk junction diodes are omitted
(their currents are ~1e-14 A at the reverse biases these circuits see).
"""

from __future__ import annotations

import torch

from circuits.devices.base import Device, DeviceEval, register

_NO_CAPS = "junction and Meyer capacitances are not modelled; use explicit C elements or CGSO/CGDO/CGBO"
_NO_RES = "series resistances are not modelled; add explicit R elements"
_DRAIN_TO_SOURCE = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)


@register
class Mos1(Device):
    """M d g s b model w= l=: level-1 drain current with source/drain swap and body effect.

    NMOS and PMOS share one device (polarity +1/-1 comes from the model type), so every MOSFET of
    a circuit is evaluated in one vectorised call.
    """

    letter = "m"
    family = "MOSFET"
    model_types = ("nmos", "pmos")
    terminals = 4
    model_params = {"level": 1.0, "vto": 0.0, "kp": 2e-5, "gamma": 0.0, "phi": 0.6, "lambda": 0.0,
                    "ld": 0.0, "cgso": 0.0, "cgdo": 0.0, "cgbo": 0.0}
    instance_params = {"w": 1e-4, "l": 1e-4, "m": 1.0}
    aliases = {"vt0": "vto"}
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
        """Per-instance constants of the drain-current equation (cached in the parameter dict).

        The cache is keyed by grad mode: constants first computed under no_grad (a Jacobian) carry no
        graph to W, L ... and must not be reused where gradients are needed."""
        key = "_derived" if torch.is_grad_enabled() else "_derived_nograd"
        d = p.get(key)
        if d is None:
            sqphi = torch.sqrt(p["phi"])
            leff = p["l"] - 2 * p["ld"]
            beta = p["kp"] * p["m"] * p["w"] / leff
            d = {"sqphi": sqphi, "von0": p["polarity"] * p["vto"] - p["gamma"] * sqphi,
                 "beta": beta, "beta_lambda": beta * p["lambda"],
                 "cgs": p["cgso"] * p["m"] * p["w"], "cgd": p["cgdo"] * p["m"] * p["w"],
                 "cgb": p["cgbo"] * p["m"] * leff, "body_effect": bool((p["gamma"] != 0).any()),
                 "has_caps": bool((p["cgso"] != 0).any() or (p["cgdo"] != 0).any() or (p["cgbo"] != 0).any())}
            p[key] = d
        return d

    @staticmethod
    def drain_current(vgs, vds, vbs, p, d, derivatives: bool = True):
        """Type-normalised drain current and (gm, gds, gmbs) for vds >= 0 (ngspice mos1 normal mode).

        With derivatives=False only the current is computed (the three conductances are None).
        """
        gamma, sqphi, lam = p["gamma"], d["sqphi"], p["lambda"]
        below = vbs <= 0
        root = torch.sqrt(torch.clamp(p["phi"] - vbs, min=1e-30))
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
            root = torch.sqrt(torch.clamp(p["phi"] - vbs_eff, min=1e-30))
            linear_arg = torch.clamp(d["sqphi"] - vbs_eff / (2 * d["sqphi"]), min=0.0)
            vgs_eff = vgs_eff - p["gamma"] * torch.where(vbs_eff <= 0, root, linear_arg)
        vgst = torch.clamp(vgs_eff - d["von0"], min=0.0)
        m = torch.minimum(vgst, vds_eff)
        ids = torch.addcmul(d["beta"], d["beta_lambda"], vds_eff) * m * torch.add(vgst, m, alpha=-0.5)
        # current into the drain: tp * sign(vds) * ids (ids = 0 where vds = 0)
        return torch.sign(v_ds) * ids, (vd, vg, vs, vb)

    def evaluate(self, v, s, t, p, ctx=None):
        d = self.derived(p)
        i_d, (vd, vg, vs, vb) = self._drain_current_only(v, p, d)
        current = i_d.unsqueeze(-1) * _DRAIN_TO_SOURCE.to(i_d.dtype)  # (+i, 0, -i, 0) on (d, g, s, b)
        if not d["has_caps"]:
            return DeviceEval(i=current)
        qgs = d["cgs"] * (vg - vs)
        qgd = d["cgd"] * (vg - vd)
        qgb = d["cgb"] * (vg - vb)
        charge = torch.stack((-qgd, qgs + qgd + qgb, -qgs, -qgb), -1)
        return DeviceEval(i=current, q=charge)

    def local_jacobian(self, v, s, t, p, ctx=None):
        """Analytic: drain row (gds, gm, -(gm+gds+gmbs), gmbs) in normal mode, mirrored in reverse."""
        d, normal, i_d, (gm, gds, gmbs), (vd, vg, vs, vb) = self._drain(v, p)
        gsum = gm + gds + gmbs
        row_d = torch.where(normal.unsqueeze(-1), torch.stack((gds, gm, -gsum, gmbs), -1),
                            torch.stack((gsum, -gm, -gds, -gmbs), -1))
        zero_row = torch.zeros_like(row_d)
        jf = torch.stack((row_d, zero_row, -row_d, zero_row), -2)
        cgs, cgd, cgb = (torch.broadcast_to(d[k], i_d.shape) for k in ("cgs", "cgd", "cgb"))
        zero = torch.zeros_like(i_d)
        jq = torch.stack((torch.stack((cgd, -cgd, zero, zero), -1),
                          torch.stack((-cgd, cgs + cgd + cgb, -cgs, -cgb), -1),
                          torch.stack((zero, -cgs, cgs, zero), -1),
                          torch.stack((zero, -cgb, zero, cgb), -1)), -2)
        current = torch.stack((i_d, zero, -i_d, zero), -1)
        charge = (jq @ v.unsqueeze(-1)).squeeze(-1) if d["has_caps"] else None
        return DeviceEval(i=current, q=charge), jf, jq
