"""pn-junction pieces shared by the diode and the BJT, as ngspice computes them at 27 C."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# ngspice's constants (src/include/ngspice/const.h), so kT/q matches its value to the last digit
_BOLTZ = 1.38064852e-23
_CHARGE = 1.6021766208e-19
_REFTEMP = 300.15  # 27 C: the circuit and nominal temperature
THERMAL_VOLTAGE = _BOLTZ * _REFTEMP / _CHARGE
GMIN = 1e-12  # ngspice adds gmin in parallel with every junction
_EXP_LIMIT = 40.0  # beyond this the exponential is continued linearly to keep Newton finite


def limited_exp(x: Tensor) -> Tensor:
    """exp(x) continued linearly above _EXP_LIMIT (value and slope continuous)."""
    e = math.exp(_EXP_LIMIT)
    return torch.where(x < _EXP_LIMIT, torch.exp(torch.clamp(x, max=_EXP_LIMIT)),
                       e * (1 + x - _EXP_LIMIT))


def junction_current(v: Tensor, isat: Tensor, nvt: Tensor) -> Tensor:
    """isat (exp(v/nvt) - 1), with ngspice's reverse form -isat (1 + (3 nvt / (e v))^3) below -3 nvt."""
    forward = isat * (limited_exp(v / nvt) - 1)
    arg = (3 * nvt / (math.e * torch.clamp(v, max=-1e-30))) ** 3
    return torch.where(v >= -3 * nvt, forward, -isat * (1 + arg))


def depletion_coefficients(cj0: Tensor, vj: Tensor, m: Tensor, fc: Tensor) -> tuple[Tensor, ...]:
    """The bias-independent constants of `depletion_charge` (computed once per parameter set)."""
    f1 = vj / (1 - m) * (1 - torch.pow(1 - fc, 1 - m))
    f2 = torch.pow(1 - fc, 1 + m)
    f3 = 1 - fc * (1 + m)
    return cj0, vj, m, fc * vj, f1, f2, f3


def depletion_charge_from(v: Tensor, coeffs: tuple[Tensor, ...]) -> Tensor:
    """`depletion_charge` from precomputed `depletion_coefficients`."""
    cj0, vj, m, fcv, f1, f2, f3 = coeffs
    below = vj / (1 - m) * (1 - torch.pow(torch.clamp(1 - v / vj, min=1e-12), 1 - m))
    above = f1 + (f3 * (v - fcv) + m / (2 * vj) * (v * v - fcv * fcv)) / f2
    return cj0 * torch.where(v < fcv, below, above)


def depletion_charge(v: Tensor, cj0: Tensor, vj: Tensor, m: Tensor, fc: Tensor) -> Tensor:
    """Depletion charge of a junction with zero-bias capacitance cj0, ngspice's linear continuation
    of the capacitance above fc vj."""
    return depletion_charge_from(v, depletion_coefficients(cj0, vj, m, fc))
