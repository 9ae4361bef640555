"""Resistor with a ``.model name R`` card: ngspice-39's geometric (semiconductor) resistor
(res/restemp.c RESupdate_conduct, ressetup.c defaults, resmpar.c) at 27 C."""

from __future__ import annotations

import math

import torch

from circuits.devices.base import register
from circuits.devices.passive import Resistor, written_resistance

_NOT_GIVEN = math.nan
# resmpar.c: a model r/res at or below 1 mOhm is not stored (the model's value counts as not given)
_MODEL_RES_FLOOR = 1e-3
_FALLBACK = 1e-3  # RESupdate_conduct: no usable value at all gives 1 mOhm (with a warning)
_AT_27C = "only the nominal temperature 27 C is supported"


@register
class ModelResistor(Resistor):
    """R n+ n- [value] model [l=] [w=] [m=] [scale=]: the value if given, else
    (l - 2 short) / (w - 2 narrow) rsh when l w rsh > 0, else the model's res, else 1 mOhm;
    l and w default to the model's l and w (defw); the current is m v / (R scale)."""

    model_types = ("r",)
    model_params = {"rsh": 0.0, "narrow": 0.0, "short": 0.0, "res": _NOT_GIVEN, "l": 10e-6, "w": 10e-6}
    instance_params = {"value": _NOT_GIVEN, "l": 10e-6, "w": 10e-6, "m": 1.0, "scale": 1.0,
                       "ac": 0.0, "tc1": 0.0, "tc2": 0.0, "tce": 0.0, "noisy": 1.0, "bv_max": 1e99}
    aliases = {"defw": "w", "dw": "narrow", "dlr": "short", "r": "res", "tc1r": "tc1", "tc2r": "tc2"}
    # temperature coefficients act through temp - tnom, which is 0 at the only temperature (27 C)
    inert_params = {**{k: None for k in ("tc1", "tc2", "tce", "kf", "af", "lf", "wf", "ef", "bv_max")},
                    "tnom": 27.0}
    rejected_params = {"tnom": _AT_27C,
                       **{k: "instance temperatures are not supported (27 C only)" for k in ("temp", "dtemp")}}

    def resistance(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """RESupdate_conduct's resistance from the instance value, the geometry or the model."""
        l, w, rsh = p["l"], p["w"], p["rsh"]
        geometric = (l - 2 * p["short"]) / (w - 2 * p["narrow"]) * rsh
        res = p["res"]
        model = torch.where(res.isnan() | (res <= _MODEL_RES_FLOOR), torch.full_like(res, _FALLBACK), res)
        fallback = torch.where(l * w * rsh > 0, geometric, model)
        return torch.where(p["value"].isnan(), fallback, written_resistance(p["value"]))
