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


# --------------------------------------------------------------------------------------------------
# Newton limiting (ngspice's devsup.c): the voltages a device is linearised at in one Newton
# iteration, given the iterate's voltage vnew and the voltage it was linearised at before (vold).
# Each returns vnew itself (the same tensor values) wherever it does not limit.

_SQRT2 = math.sqrt(2.0)


def critical_voltage(isat: Tensor, nvt: Tensor | float) -> Tensor:
    """vcrit = n vt log(n vt / (sqrt(2) isat)): where the junction current's curvature is largest
    (ngspice's tVcrit); +inf for isat = 0 (no limiting)."""
    nvt = torch.as_tensor(nvt, dtype=isat.dtype)
    return torch.where(isat > 0, nvt * torch.log(nvt / (_SQRT2 * isat.clamp(min=1e-300))),
                       torch.full_like(isat, math.inf))


def pnjlim(vnew: Tensor, vold: Tensor, vt: Tensor | float, vcrit: Tensor) -> Tensor:
    """DEVpnjlim: a forward step above vcrit moves logarithmically in the current, a reverse step is
    bounded (Alan Gillespie's negative-voltage limit)."""
    arg = (vnew - vold) / vt
    big = (vnew > vcrit) & (arg.abs() > 2)
    from_on = torch.where(arg > 0, vold + vt * (2 + torch.log((arg - 2).clamp(min=1e-300))),
                          vold - vt * (2 + torch.log((2 - arg).clamp(min=1e-300))))
    from_off = vt * torch.log((vnew / vt).clamp(min=1e-300))
    floor = torch.where(vold > 0, -vold - 1, 2 * vold - 1)
    below = torch.where((vnew < 0) & (vnew < floor), floor, vnew)
    return torch.where(big, torch.where(vold > 0, from_on, from_off), below)


def fetlim(vnew: Tensor, vold: Tensor, vto: Tensor) -> Tensor:
    """DEVfetlim: limits a gate-source voltage's step around the threshold vto (type-normalised)."""
    vtsthi = (2 * (vold - vto)).abs() + 2
    vtstlo = (vold - vto).abs() + 1
    vtox = vto + 3.5
    delv = vnew - vold
    # on, well above threshold
    going_off = torch.where(vnew >= vtox, torch.where(-delv > vtstlo, vold - vtstlo, vnew),
                            torch.maximum(vnew, vto + 2))
    staying_on = torch.where(delv >= vtsthi, vold + vtsthi, vnew)
    high = torch.where(delv <= 0, going_off, staying_on)
    # on, near threshold
    middle = torch.where(delv <= 0, torch.maximum(vnew, vto - 0.5), torch.minimum(vnew, vto + 4))
    # off
    vtemp = vto + 0.5
    rising = torch.where(vnew <= vtemp, torch.where(delv > vtstlo, vold + vtstlo, vnew), vtemp)
    off = torch.where(delv <= 0, torch.where(-delv > vtsthi, vold - vtsthi, vnew), rising)
    return torch.where(vold >= vto, torch.where(vold >= vtox, high, middle), off)


def limvds(vnew: Tensor, vold: Tensor) -> Tensor:
    """DEVlimvds: limits a drain-source voltage's step."""
    high = torch.where(vnew > vold, torch.minimum(vnew, 3 * vold + 2),
                       torch.where(vnew < 3.5, torch.maximum(vnew, torch.full_like(vnew, 2.0)), vnew))
    low = torch.where(vnew > vold, torch.minimum(vnew, torch.full_like(vnew, 4.0)),
                      torch.maximum(vnew, torch.full_like(vnew, -0.5)))
    return torch.where(vold >= 3.5, high, low)
