"""Independent-source waveforms (DC, PULSE, SIN, EXP, PWL, AM, SFFM) exactly as ngspice-39 defines them,
in torch.

Arguments are tensors (or floats) broadcastable against ``t``, so a batch of designs can carry its
own amplitudes; gradients flow to every argument.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["pulse", "pulse_timing", "sine", "exponential", "exp_timing", "pwl", "am", "sffm", "ARITY",
           "UNUSED_ARGS", "check_args", "evaluate", "breakpoints", "phase_points"]


def _t(x: Tensor | float, like: Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(x, dtype=like.dtype, device=like.device)


def _or_default(x, default: float):
    """ngspice's rule for PULSE/SIN timing arguments: omitted or exactly 0 means the default."""
    if x is None:
        return default
    if isinstance(x, Tensor):
        return torch.where(x == 0, torch.as_tensor(default, dtype=x.dtype), x)
    return default if x == 0 else x


def pulse_timing(args: list, *, tstep: float, tstop: float) -> tuple:
    """(td, tr, tf, pw, per) of PULSE arguments with ngspice-39's defaults (vsrcload.c): td 0, tr and
    tf tstep, pw and per tstop, a given 0 counting as omitted."""
    full = list(args[2:]) + [None] * (7 - len(args))
    td, tr, tf, pw, per = full
    return (0.0 if td is None else td, _or_default(tr, tstep), _or_default(tf, tstep),
            _or_default(pw, tstop), _or_default(per, tstop))


def pulse(t: Tensor, v1, v2, *timing, tstep: float, tstop: float) -> Tensor:
    """ngspice PULSE(v1 v2 td tr tf pw per); defaults as `pulse_timing`.  The period wraps only once
    the time since td exceeds per (so t = td + per still reads v2 with pw = per = tstop)."""
    td, tr, tf, pw, per = pulse_timing([v1, v2, *timing], tstep=tstep, tstop=tstop)
    t, v1, v2, td, tr, tf, pw, per = torch.broadcast_tensors(
        *(_t(a, t) for a in (t, v1, v2, td, tr, tf, pw, per)))
    local = t - td
    local = torch.where(local > per, local - per * torch.floor(local / per), local)
    rising = v1 + (v2 - v1) * local / tr
    falling = v2 + (v1 - v2) * (local - tr - pw) / tf
    return torch.where(local <= 0, v1,
           torch.where(local < tr, rising,
           torch.where(local <= tr + pw, v2,
           torch.where(local < tr + pw + tf, falling, v1))))


def sine(t: Tensor, vo, va, freq=None, td=0.0, theta=0.0, phase=0.0, *, tstop: float) -> Tensor:
    """ngspice SIN(vo va freq td theta phase); phase in degrees, freq omitted or 0 means 1/tstop."""
    freq = _or_default(freq, 1.0 / tstop)
    t, vo, va, freq, td, theta, phase = torch.broadcast_tensors(
        *(_t(a, t) for a in (t, vo, va, freq, td, theta, phase)))
    ph = phase * (math.pi / 180.0)
    local = torch.clamp(t - td, min=0.0)
    return vo + va * torch.exp(-local * theta) * torch.sin(2 * math.pi * freq * local + ph)


def exp_timing(args: list, *, tstep: float) -> tuple:
    """(td1, tau1, td2, tau2) of EXP arguments with ngspice-39's defaults (vsrcload.c): td1 and both
    tau tstep, td2 td1 + tstep, a given 0 counting as omitted."""
    full = list(args[2:]) + [None] * (6 - len(args))
    td1 = _or_default(full[0], tstep)
    return td1, _or_default(full[1], tstep), _or_default(full[2], td1 + tstep), _or_default(full[3], tstep)


def exponential(t: Tensor, v1, v2, *timing, tstep: float) -> Tensor:
    """ngspice EXP(v1 v2 td1 tau1 td2 tau2): v1 up to td1, then a rise towards v2 with tau1, from td2
    on the fall back with tau2 added; defaults as `exp_timing`."""
    td1, tau1, td2, tau2 = exp_timing([v1, v2, *timing], tstep=tstep)
    t, v1, v2, td1, tau1, td2, tau2 = torch.broadcast_tensors(
        *(_t(a, t) for a in (t, v1, v2, td1, tau1, td2, tau2)))
    rise = v1 + (v2 - v1) * (1 - torch.exp(-(t - td1) / tau1))
    fall = rise + (v1 - v2) * (1 - torch.exp(-(t - td2) / tau2))
    return torch.where(t <= td1, v1, torch.where(t <= td2, rise, fall))


def pwl(t: Tensor, times: list, values: list) -> Tensor:
    """ngspice PWL(t1 v1 t2 v2 ...): linear between points, held constant outside."""
    if not any(isinstance(x, Tensor) for x in (*times, *values)) and list(times) == sorted(times):
        return _pwl_constant(t, times, values)
    out = _t(values[0], t) * torch.ones_like(t)
    for k in range(1, len(times)):
        t0, t1 = _t(times[k - 1], t), _t(times[k], t)
        v0, v1 = _t(values[k - 1], t), _t(values[k], t)
        span = torch.clamp(t1 - t0, min=1e-300)
        frac = torch.clamp((t - t0) / span, 0.0, 1.0)
        seg = v0 + (v1 - v0) * frac
        out = torch.where(t > t0, seg, out)
    return out


def _pwl_constant(t: Tensor, times: list[float], values: list[float]) -> Tensor:
    """`pwl` of plain increasing numbers in O(T log N): the segment whose start is the last time point
    before t (a long PWL's one-op-per-point loop cost minutes on a 20,000-point source)."""
    tk = torch.as_tensor(times, dtype=t.dtype, device=t.device)
    vk = torch.as_tensor(values, dtype=t.dtype, device=t.device)
    if tk.numel() == 1:
        return vk[0] * torch.ones_like(t)
    k = torch.searchsorted(tk, t.detach().contiguous(), right=False).clamp(1, tk.numel() - 1)
    t0, t1, v0, v1 = tk[k - 1], tk[k], vk[k - 1], vk[k]
    frac = torch.clamp((t - t0) / torch.clamp(t1 - t0, min=1e-300), 0.0, 1.0)
    return torch.where(t > tk[0], v0 + (v1 - v0) * frac, vk[0])


def _full(args: list, n: int) -> list:
    """The arguments padded with None (omitted) to n."""
    return list(args) + [None] * (n - len(args))


def am(t: Tensor, va, vo, mf=None, fc=None, td=None, phasec=None, phases=None, *unused, tstop: float) -> Tensor:
    """ngspice-39's AM(va vo mf fc td phasec phases) (vsrcload.c, isrcload.c): 0 up to td, then
    va (vo + sin(2π mf τ + φs)) sin(2π fc τ + φs) with τ = t - td.  mf omitted or 0 means 1/tstop;
    fc omitted is 0; phases in degrees.  ngspice-39 reads phasec but uses phases for both sines
    (as here); later ngspice versions changed the argument list (see `UNUSED_ARGS`).

    Plain numbers stay Python scalars in the torch ops (a source evaluated at one time point per
    call, as a fast modulated source is, costs the ops alone); tensors broadcast against t."""
    mf = _or_default(mf, 1.0 / tstop)
    fc, td, phases = (0.0 if a is None else a for a in (fc, td, phases))
    ph = phases * (math.pi / 180.0)
    local = t - td
    value = va * (vo + torch.sin(local * (2 * math.pi * mf) + ph)) * torch.sin(local * (2 * math.pi * fc) + ph)
    return torch.where(local <= 0, 0.0, value)


def sffm(t: Tensor, vo, va, fc=None, mdi=None, fs=None, phasec=None, phases=None, *unused,
         tstop: float) -> Tensor:
    """ngspice-39's SFFM(vo va fc mdi fs phasec phases) (vsrcload.c, isrcload.c):
    vo + va sin(2π fc t + φc + mdi sin(2π fs t + φs)) from t = 0 (no delay); fc and fs omitted or 0
    mean 1/tstop, mdi omitted is 0; phases in degrees (numbers and tensors as in `am`)."""
    fc, fs = _or_default(fc, 1.0 / tstop), _or_default(fs, 1.0 / tstop)
    mdi, phasec, phases = (0.0 if a is None else a for a in (mdi, phasec, phases))
    deg = math.pi / 180.0
    return vo + va * torch.sin(t * (2 * math.pi * fc) + phasec * deg
                               + mdi * torch.sin(t * (2 * math.pi * fs) + phases * deg))


#: how many values each waveform takes (min, max; None: any even number).  ngspice reads any number
#: of values and ignores those past the last it uses; AM and SFFM accept one more than ngspice-39
#: uses (ngspice 43+ reads 8, with other meanings: see `UNUSED_ARGS`)
ARITY: dict[str, tuple[int, int | None]] = {"dc": (1, 1), "pulse": (2, 7), "sin": (2, 6), "exp": (2, 6),
                                            "pwl": (2, None), "am": (2, 8), "sffm": (2, 8)}
#: kind -> (index of the first value ngspice-39 reads but does not use, why)
UNUSED_ARGS: dict[str, tuple[int, str]] = {
    "am": (7, "ngspice-39's AM uses 7 values (va vo mf fc td phasec phases); ngspice 43+ reads 8, "
              "with other meanings and defaults"),
    "sffm": (7, "ngspice-39's SFFM uses 7 values (vo va fc mdi fs phasec phases); ngspice 43+ reads 8, "
                "with other meanings and defaults"),
}
_EVALUATORS = {
    "dc": lambda t, args, tstep, tstop: _t(args[0], t) * torch.ones_like(t),
    "pulse": lambda t, args, tstep, tstop: pulse(t, *args, tstep=tstep, tstop=tstop),
    "sin": lambda t, args, tstep, tstop: sine(t, *args, tstop=tstop),
    "exp": lambda t, args, tstep, tstop: exponential(t, *args, tstep=tstep),
    "pwl": lambda t, args, tstep, tstop: pwl(t, args[0::2], args[1::2]),
    "am": lambda t, args, tstep, tstop: am(t, *args, tstop=tstop),
    "sffm": lambda t, args, tstep, tstop: sffm(t, *args, tstop=tstop),
}


def check_args(kind: str, args: list) -> str | None:
    """Why a waveform cannot take these arguments (None if it can): their number, and a PWL's times
    (None where not a known number) going backwards."""
    lo, hi = ARITY[kind]
    if len(args) < lo or (hi is not None and len(args) > hi) or (kind == "pwl" and len(args) % 2):
        need = "an even number (>= 2) of" if kind == "pwl" else f"{lo} to {hi}"
        return f"{kind.upper()} needs {need} values, got {len(args)}"
    if kind == "pwl":
        times = args[::2]
        if any(t0 is not None and t1 is not None and t1 < t0 for t0, t1 in zip(times, times[1:])):
            return "PWL times must be non-decreasing"
    return None


def evaluate(kind: str, args: list, t: Tensor, *, tstep: float, tstop: float) -> Tensor:
    """Evaluate a waveform of the given kind with already-evaluated arguments at times t."""
    if kind not in _EVALUATORS:
        raise ValueError(f"unknown waveform {kind!r}")
    return _EVALUATORS[kind](t, args, tstep, tstop)


def _scalar_set(x) -> set[float]:
    if isinstance(x, Tensor):
        return {float(v) for v in x.detach().reshape(-1).unique()}
    return {float(x)}


#: the delay's position in waveforms that start at a delay: SIN's slope jumps there, AM's value
_DELAY_INDEX = {"sin": 3, "am": 4}


def breakpoints(kind: str, args: list, *, tstep: float, tstop: float) -> list[float]:
    """Times of slope discontinuities in [0, tstop] (union over a batch of designs)."""
    from circuits.result import check_breakpoints

    pts: set[float] = set()
    if kind == "pwl":
        for tk in args[0::2]:
            pts |= _scalar_set(tk)
    elif kind == "pulse":
        td, tr, tf, pw, per = pulse_timing(list(args), tstep=tstep, tstop=tstop)
        for d in _scalar_set(td):
            for r in _scalar_set(tr):
                for f in _scalar_set(tf):
                    for w in _scalar_set(pw):
                        for pr in _scalar_set(per):
                            if pr > 0:
                                check_breakpoints(4 * (tstop - d) / pr, tstop, "a PULSE source")
                            start = d
                            while start < tstop and pr > 0:
                                pts |= {start, start + r, start + r + w, start + r + w + f}
                                start += pr
    elif kind == "exp":
        for td in exp_timing(list(args), tstep=tstep)[0::2]:
            pts |= _scalar_set(td)
    elif kind in _DELAY_INDEX:
        delay = _full(args, 8)[_DELAY_INDEX[kind]]
        if delay is not None:
            pts |= _scalar_set(delay)
    return sorted(p for p in pts if 0.0 < p < tstop)


#: more quarter-period points than this (a fast SIN over a long run) are not worth window edges
MAX_PHASE_POINTS = 1000


def phase_points(kind: str, args: list, *, tstep: float, tstop: float) -> list[float]:
    """Times in (0, tstop) where an undamped SIN is at a peak, a trough or its offset (every quarter
    period after td); none for other waveforms, or where the design changes the SIN's timing."""
    if kind != "sin":
        return []
    full = _full(args, 6)
    va, freq = full[1], full[2]
    td, theta, phase = (0.0 if a is None else a for a in full[3:6])  # a design's tensor has no truth value
    sets = [_scalar_set(a) for a in (_or_default(freq, 1.0 / tstop), td, theta, phase)]
    if any(len(values) != 1 for values in sets) or _scalar_set(va) == {0.0}:
        return []
    freq, td, theta, phase = (next(iter(values)) for values in sets)
    if theta != 0.0 or freq <= 0.0 or 4 * (tstop - td) * freq > MAX_PHASE_POINTS:
        return []
    quarter = 0.25 / freq
    first = math.floor(phase / 90.0) + 1  # 2πf(t − td) + ph = kπ/2 for integer k, t > td
    pts = (td + (k * 90.0 - phase) / 360.0 / freq for k in range(first, first + int((tstop - td) / quarter) + 2))
    return [p for p in pts if max(td, 0.0) < p < tstop]
