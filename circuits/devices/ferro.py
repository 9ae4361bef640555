"""Landau-Khalatnikov ferroelectric capacitor: the showcase user-level Python device."""

from __future__ import annotations

import torch

from circuits.devices.base import Device, DeviceEval, register, two_terminal

EPS0 = 8.8541878128e-12
NGSPICE_STATE_SCALE = 1e-14  # scales the state equation to ~uA so ngspice's current tolerances fit


@register
class LandauKhalatnikov(Device):
    """N a b model tfe= area= p0=: polarisation P with rho dP/dt = V/tfe - (2aP + 4bP^3 + 6gP^5).

    Terminal charge Q = area (P + eps0 epsr V / tfe) with V = v(a) - v(b).
    """

    letter = "n"
    model_types = ("lk",)
    states = ("p",)
    model_params = {"alpha": -1e9, "beta": 2.4e10, "gamma": 0.0, "rho": 0.25, "epsr": 30.0}
    instance_params = {"tfe": 10e-9, "area": 1e-13, "p0": 0.0}

    @staticmethod
    def landau_field(P, p):
        """dF/dP of the Landau free energy: 2 alpha P + 4 beta P^3 + 6 gamma P^5 (V/m)."""
        P2 = P * P
        return P * (2 * p["alpha"] + P2 * (4 * p["beta"] + 6 * p["gamma"] * P2))

    def evaluate(self, v, s, t, p, ctx=None):
        V = v[..., 0] - v[..., 1]
        P = s[..., 0]
        Q = p["area"] * (P + EPS0 * p["epsr"] * V / p["tfe"])
        drive = V / p["tfe"] - self.landau_field(P, p)
        return DeviceEval(q=two_terminal(Q), qs=(p["rho"] * P).unsqueeze(-1), fs=(-drive).unsqueeze(-1))

    def initial_states(self, p, v):
        return p["p0"].unsqueeze(-1)

    def state_scales(self, p):
        return torch.full_like(p["p0"], 0.1).unsqueeze(-1)

    def ngspice_lines(self, name, nodes, model, inst):
        a, b = nodes
        pn = f"{name}_p"
        k = NGSPICE_STATE_SCALE
        cdiel = inst["area"] * EPS0 * model["epsr"] / inst["tfe"]
        P, P2 = f"v({pn})", f"(v({pn})*v({pn}))"
        # explicit products: ngspice's power operator takes |x| for a negative base
        field = (f"({P}*(2*({model['alpha']!r}) + {P2}*(4*({model['beta']!r})"
                 f" + 6*({model['gamma']!r})*{P2})))")
        drive = f"(v({a},{b})/({inst['tfe']!r}) - {field})"
        return [
            f"c{name}_d {a} {b} {cdiel!r}",
            f"b{name}_i {a} {b} i={inst['area'] / model['rho']!r}*{drive}",
            f"c{name}_p {pn} 0 {model['rho'] * k!r}",
            f"b{name}_p 0 {pn} i={k!r}*{drive}",
            f".ic v({pn})={inst['p0']!r}",
        ]
