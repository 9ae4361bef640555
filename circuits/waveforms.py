"""Independent-source waveforms (DC, PULSE, SIN, PWL) exactly as ngspice defines them, in torch.

Arguments are tensors (or floats) broadcastable against ``t``, so a batch of designs can carry its
own amplitudes; gradients flow to every argument.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["pulse", "sine", "pwl", "evaluate", "breakpoints"]


def _t(x: Tensor | float, like: Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(x, dtype=like.dtype, device=like.device)


def pulse(t: Tensor, v1, v2, td=0.0, tr=None, tf=None, pw=None, per=None, *, tstep: float,
          tstop: float) -> Tensor:
    """ngspice PULSE(v1 v2 td tr tf pw per); zero/omitted tr, tf default to tstep, pw/per to tstop."""
    tr = tstep if tr is None or (not isinstance(tr, Tensor) and tr == 0) else tr
    tf = tstep if tf is None or (not isinstance(tf, Tensor) and tf == 0) else tf
    pw = tstop if pw is None else pw
    per = tstop if per is None else per
    t, v1, v2, td, tr, tf, pw, per = torch.broadcast_tensors(
        *(_t(a, t) for a in (t, v1, v2, td, tr, tf, pw, per)))
    local = t - td
    local = torch.where(local > 0, torch.remainder(local, per), local)
    rising = v1 + (v2 - v1) * local / tr
    falling = v2 + (v1 - v2) * (local - tr - pw) / tf
    return torch.where(local <= 0, v1,
           torch.where(local < tr, rising,
           torch.where(local <= tr + pw, v2,
           torch.where(local < tr + pw + tf, falling, v1))))


def sine(t: Tensor, vo, va, freq=None, td=0.0, theta=0.0, phase=0.0, *, tstop: float) -> Tensor:
    """ngspice SIN(vo va freq td theta phase); phase in degrees, freq defaults to 1/tstop."""
    freq = 1.0 / tstop if freq is None else freq
    t, vo, va, freq, td, theta, phase = torch.broadcast_tensors(
        *(_t(a, t) for a in (t, vo, va, freq, td, theta, phase)))
    ph = phase * (math.pi / 180.0)
    local = torch.clamp(t - td, min=0.0)
    return vo + va * torch.exp(-local * theta) * torch.sin(2 * math.pi * freq * local + ph)


def pwl(t: Tensor, times: list, values: list) -> Tensor:
    """ngspice PWL(t1 v1 t2 v2 ...): linear between points, held constant outside."""
    out = _t(values[0], t) * torch.ones_like(t)
    for k in range(1, len(times)):
        t0, t1 = _t(times[k - 1], t), _t(times[k], t)
        v0, v1 = _t(values[k - 1], t), _t(values[k], t)
        span = torch.clamp(t1 - t0, min=1e-300)
        frac = torch.clamp((t - t0) / span, 0.0, 1.0)
        seg = v0 + (v1 - v0) * frac
        out = torch.where(t > t0, seg, out)
    return out


def evaluate(kind: str, args: list, t: Tensor, *, tstep: float, tstop: float) -> Tensor:
    """Evaluate a waveform of the given kind with already-evaluated arguments at times t."""
    if kind == "dc":
        return _t(args[0], t) * torch.ones_like(t)
    if kind == "pulse":
        return pulse(t, *args, tstep=tstep, tstop=tstop)
    if kind == "sin":
        return sine(t, *args, tstop=tstop)
    if kind == "pwl":
        return pwl(t, args[0::2], args[1::2])
    raise ValueError(f"unknown waveform {kind!r}")


def _scalar_set(x) -> set[float]:
    if isinstance(x, Tensor):
        return {float(v) for v in x.detach().reshape(-1).unique()}
    return {float(x)}


def breakpoints(kind: str, args: list, *, tstep: float, tstop: float) -> list[float]:
    """Times of slope discontinuities in [0, tstop] (union over a batch of designs)."""
    pts: set[float] = set()
    if kind == "pwl":
        for tk in args[0::2]:
            pts |= _scalar_set(tk)
    elif kind == "pulse":
        full = list(args) + [None] * (7 - len(args))
        v1, v2, td, tr, tf, pw, per = full
        td = 0.0 if td is None else td
        tr = tstep if tr is None or (not isinstance(tr, Tensor) and tr == 0) else tr
        tf = tstep if tf is None or (not isinstance(tf, Tensor) and tf == 0) else tf
        pw = tstop if pw is None else pw
        per = tstop if per is None else per
        for d in _scalar_set(td):
            for r in _scalar_set(tr):
                for f in _scalar_set(tf):
                    for w in _scalar_set(pw):
                        for pr in _scalar_set(per):
                            start = d
                            while start < tstop and pr > 0:
                                pts |= {start, start + r, start + r + w, start + r + w + f}
                                start += pr
    elif kind == "sin":
        full = list(args) + [None] * (6 - len(args))
        if full[3] is not None:
            pts |= _scalar_set(full[3])
    return sorted(p for p in pts if 0.0 < p < tstop)
