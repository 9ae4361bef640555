"""`.meas`-style waveform measurements over torch tensors (linear interpolation, differentiable, batched).

Conventions shared by every function here:

* A waveform is a pair ``(t, v)``: ``v`` has shape ``(..., T)`` (leading dimensions are a batch) and
  ``t`` has shape ``(T,)`` (one grid shared by the batch) or any shape broadcastable to ``v``.
  The grid must be non-decreasing (repeated time points, as ngspice emits at breakpoints, are fine)
  and may be non-uniform.  Python numbers, lists and numpy arrays are accepted and become float64;
  tensors keep their floating dtype (mixed inputs are promoted with torch's usual rules).
* Between samples the waveform is the straight line through them, so a crossing of ``level`` in the
  segment ``k -> k+1`` is at ``t* = t_k + (level - v_k) (t_{k+1} - t_k) / (v_{k+1} - v_k)``; gradients
  flow to ``v``, ``t`` and ``level`` through that formula (the choice of segment is piecewise constant).
* Crossings are counted on the sign of ``v - level`` where a sample that lies *exactly* on the level
  takes the sign of the last sample before it that did not (samples on the level at the very start take
  the sign of the first one that does not).  So a waveform that passes through the level at a sample is
  counted once (at that sample), one that only touches the level and turns back is not counted, and one
  that sits on the level for a while and then leaves it to the other side is counted once, when it
  leaves.
* A measurement that does not exist (crossing not found ...) is NaN, except where a function's
  docstring says it raises `MeasureError` (1-D `period` / `frequency`, DataFrame helpers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from circuits.errors import NeuroSpiceError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "MeasureError",
    "crossings",
    "cross_time",
    "period",
    "frequency",
    "delay",
    "rise_time",
    "fall_time",
    "peak_to_peak",
    "interp",
    "value_at",
    "final_value",
    "integral",
    "mean",
    "rms",
    "nrmse",
    "series",
    "compare",
]

_DIRECTIONS = ("rise", "fall", "both")
TIME_COLUMN = "time"


class MeasureError(NeuroSpiceError):
    """A measurement cannot be made (too few crossings, missing DataFrame column, bad arguments ...)."""


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _as_tensor(x, like: Tensor | None = None) -> Tensor:
    """Convert to a floating tensor (float64 for non-tensors, or ``like``'s dtype/device if given)."""
    if isinstance(x, Tensor):
        return x if x.is_floating_point() else x.to(torch.float64 if like is None else like.dtype)
    if like is not None:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return torch.as_tensor(x, dtype=torch.float64)


def _prepare(t, v) -> tuple[Tensor, Tensor]:
    """Return ``(t, v)`` as tensors of one common floating dtype, broadcast to one shape ``(..., T)``."""
    v = _as_tensor(v)
    t = _as_tensor(t, like=v if not isinstance(t, Tensor) else None)
    if v.dim() == 0 or t.dim() == 0:
        raise MeasureError("waveform and time grid must have at least one (time) dimension")
    if t.shape[-1] != v.shape[-1]:
        raise MeasureError(f"time grid has {t.shape[-1]} points but the waveform has {v.shape[-1]}")
    if v.shape[-1] < 2:
        raise MeasureError("a waveform needs at least 2 samples")
    dtype = torch.promote_types(t.dtype, v.dtype)
    t, v = t.to(dtype), v.to(dtype)
    t, v = torch.broadcast_tensors(t, v)
    return t, v


def _check_direction(direction: str) -> str:
    if direction not in _DIRECTIONS:
        raise MeasureError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    return direction


def _level_tensor(level, v: Tensor) -> Tensor:
    """``level`` as a tensor of v's dtype with a trailing singleton time dimension: shape (..., 1)."""
    lv = _as_tensor(level, like=v).to(v.dtype)
    return lv.unsqueeze(-1)


def _filled_sign(d: Tensor) -> Tensor:
    """Sign of ``d`` along the last dim where zeros take the previous nonzero sign (leading: the next)."""
    s = torch.sign(d)
    T = d.shape[-1]
    nz = s != 0  # NaN counts as "nonzero" (and never compares as a crossing)
    ar = torch.arange(T, device=d.device).expand_as(s)
    last = torch.cummax(torch.where(nz, ar, torch.full_like(ar, -1)), dim=-1).values
    first = torch.argmax(nz.to(torch.int8), dim=-1, keepdim=True).expand_as(s)
    idx = torch.where(last >= 0, last, first)
    return torch.gather(s, -1, idx)


def _segment_crossings(t: Tensor, v: Tensor, level, direction: str) -> tuple[Tensor, Tensor]:
    """Per-segment crossing mask and crossing time, both of shape (..., T-1) (time valid where masked)."""
    _check_direction(direction)
    lv = _level_tensor(level, v)
    d = v - lv
    s = _filled_sign(d.detach())
    s0, s1 = s[..., :-1], s[..., 1:]
    rise = (s0 < 0) & (s1 > 0)
    fall = (s0 > 0) & (s1 < 0)
    mask = rise if direction == "rise" else fall if direction == "fall" else rise | fall
    d0, d1 = d[..., :-1], d[..., 1:]
    t0, t1 = t[..., :-1], t[..., 1:]
    dd = d1 - d0
    safe = torch.where(mask, dd, torch.ones_like(dd))  # keeps gradients finite off the crossing segments
    tc = t0 - d0 * (t1 - t0) / safe
    if tc.shape != mask.shape:  # level may have broadcast the batch further
        tc, mask = torch.broadcast_tensors(tc, mask)
    return mask, tc


def _select(mask: Tensor, tc: Tensor, n: int, start: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pick the n-th masked entry along the last dim (n<0 from the end), optionally only at segment >= start.

    Returns ``(value, exists, index)``; ``value`` is NaN where the entry does not exist.
    """
    if not isinstance(n, int) or n == 0:
        raise MeasureError(f"crossing number n must be a nonzero integer (1 = first, -1 = last), got {n!r}")
    if start is not None:
        ar = torch.arange(mask.shape[-1], device=mask.device)
        mask = mask & (ar >= start.unsqueeze(-1))
    cnt = torch.cumsum(mask.to(torch.int64), dim=-1)
    total = cnt[..., -1:]
    target = torch.full_like(total, n) if n > 0 else total + (n + 1)
    hit = mask & (cnt == target)
    exists = hit.any(dim=-1)
    idx = torch.argmax(hit.to(torch.int8), dim=-1, keepdim=True)
    val = torch.gather(tc, -1, idx).squeeze(-1)
    val = torch.where(exists, val, torch.full_like(val, math.nan))
    return val, exists, idx.squeeze(-1)


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with a zero (not NaN) gradient at 0."""
    pos = x > 0
    y = torch.sqrt(torch.where(pos, x, torch.ones_like(x)))
    return torch.where(pos, y, torch.zeros_like(y))


def _span(t: Tensor) -> Tensor:
    return t[..., -1] - t[..., 0]


# ----------------------------------------------------------------------------------------------------
# crossings
# ----------------------------------------------------------------------------------------------------


def crossings(t, v, level, direction: str = "rise") -> Tensor:
    """All crossing times of a 1-D waveform through ``level`` (linear interpolation), in time order."""
    t, v = _prepare(t, v)
    if v.dim() != 1:
        raise MeasureError(f"crossings() takes a 1-D waveform, got shape {tuple(v.shape)}; use cross_time()")
    if _as_tensor(level).dim() != 0:
        raise MeasureError("crossings() takes a scalar level")
    mask, tc = _segment_crossings(t, v, level, direction)
    return tc[mask]


def cross_time(t, v, level, direction: str = "rise", n: int = 1) -> Tensor:
    """Time of the n-th crossing (n=1 first, n=-1 last) of ``level``; shape (...,), NaN where it does not exist."""
    t, v = _prepare(t, v)
    mask, tc = _segment_crossings(t, v, level, direction)
    return _select(mask, tc, n)[0]


def _default_level(t: Tensor, v: Tensor) -> Tensor:
    """Midpoint of min and max of v over the second half (in time) of the window; shape (...,)."""
    tmid = 0.5 * (t[..., :1] + t[..., -1:])
    late = t >= tmid
    vmax = torch.where(late, v, torch.full_like(v, -math.inf)).amax(dim=-1)
    vmin = torch.where(late, v, torch.full_like(v, math.inf)).amin(dim=-1)
    return 0.5 * (vmax + vmin)


def period(t, v, level=None, k: int = 3, direction: str = "rise") -> Tensor:
    """Mean period over the last ``k`` full periods, from the last k+1 crossings of ``level`` in ``direction``.

    ``level`` defaults to the midpoint of min and max of ``v`` over the second half (in time) of the
    window.  With ``direction="both"`` the last 2k+1 crossings (rising and falling) are used.  For a
    1-D waveform too few crossings raise `MeasureError`; batched rows without enough crossings are NaN.
    """
    if not isinstance(k, int) or k < 1:
        raise MeasureError(f"period: k must be a positive integer, got {k!r}")
    _check_direction(direction)
    t, v = _prepare(t, v)
    if level is None:
        level = _default_level(t, v)
    mask, tc = _segment_crossings(t, v, level, direction)
    need = 2 * k + 1 if direction == "both" else k + 1
    last = _select(mask, tc, -1)[0]
    first = _select(mask, tc, -need)[0]
    p = (last - first) / k
    if v.dim() == 1:
        found = int(mask.sum())
        if found < need:
            lv = float(_as_tensor(level).detach().reshape(-1)[0]) if _as_tensor(level).numel() else math.nan
            raise MeasureError(
                f"period: need at least {need} {direction} crossings of level {lv:.6g} to measure {k} "
                f"period(s), found {found} in t = [{float(t[0]):.6g}, {float(t[-1]):.6g}] s"
            )
    return p


def frequency(t, v, level=None, k: int = 3, direction: str = "rise") -> Tensor:
    """1 / `period` (same arguments, same errors / NaNs)."""
    return 1.0 / period(t, v, level=level, k=k, direction=direction)


def delay(
    t,
    a,
    b,
    level_a,
    level_b=None,
    dir_a: str = "rise",
    dir_b: str = "rise",
    n_a: int = 1,
    n_b: int = 1,
) -> Tensor:
    """``cross_time(b, level_b, dir_b, n_b) - cross_time(a, level_a, dir_a, n_a)`` (level_b defaults to level_a)."""
    if level_b is None:
        level_b = level_a
    return cross_time(t, b, level_b, dir_b, n_b) - cross_time(t, a, level_a, dir_a, n_a)


def _transition_time(t, v, low: float, high: float, rising: bool) -> Tensor:
    if not (0.0 < low < high < 1.0):
        raise MeasureError(f"need 0 < low < high < 1 (fractions of the swing), got low={low!r}, high={high!r}")
    t, v = _prepare(t, v)
    vmin, vmax = v.amin(dim=-1), v.amax(dim=-1)
    swing = vmax - vmin
    lo, hi = vmin + low * swing, vmin + high * swing
    if rising:
        first_level, second_level, direction = lo, hi, "rise"
    else:
        first_level, second_level, direction = hi, lo, "fall"
    m1, tc1 = _segment_crossings(t, v, first_level, direction)
    t1, ok1, i1 = _select(m1, tc1, 1)
    m2, tc2 = _segment_crossings(t, v, second_level, direction)
    t2, _, _ = _select(m2, tc2, 1, start=i1)
    out = t2 - t1
    return torch.where(ok1, out, torch.full_like(out, math.nan))


def rise_time(t, v, low: float = 0.1, high: float = 0.9) -> Tensor:
    """Rise time of the first rising edge: first rising crossing of the low level to the next rising crossing of the high level.

    The levels are ``min + low*(max-min)`` and ``min + high*(max-min)`` with min and max of the whole
    waveform (not its initial and final values).  NaN where no such edge exists.
    """
    return _transition_time(t, v, low, high, rising=True)


def fall_time(t, v, low: float = 0.1, high: float = 0.9) -> Tensor:
    """Fall time of the first falling edge: first falling crossing of the high level to the next falling crossing of the low level.

    The levels are ``min + low*(max-min)`` and ``min + high*(max-min)`` with min and max of the whole
    waveform (not its initial and final values).  NaN where no such edge exists.
    """
    return _transition_time(t, v, low, high, rising=False)


# ----------------------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------------------


def peak_to_peak(v) -> Tensor:
    """max - min over the last (time) dimension."""
    v = _as_tensor(v)
    return v.amax(dim=-1) - v.amin(dim=-1)


def final_value(v) -> Tensor:
    """Last sample along the time dimension."""
    return _as_tensor(v)[..., -1]


def interp(t, v, tq, *, outside: str = "hold") -> Tensor:
    """Linear interpolation of (t, v) at query times ``tq`` of shape (M,) or (..., M); result (..., M).

    ``outside="hold"`` holds the end values outside [t_0, t_end] (like numpy.interp); ``"nan"`` gives NaN.
    """
    if outside not in ("hold", "nan"):
        raise MeasureError(f"outside must be 'hold' or 'nan', got {outside!r}")
    t, v = _prepare(t, v)
    tq = _as_tensor(tq, like=v).to(v.dtype)
    if tq.dim() == 0:
        tq = tq.reshape(1)
    batch = torch.broadcast_shapes(t.shape[:-1], tq.shape[:-1])
    T, M = t.shape[-1], tq.shape[-1]
    t = t.expand(*batch, T)
    v = v.expand(*batch, T)
    tq = tq.expand(*batch, M)
    idx = torch.searchsorted(t.detach().contiguous(), tq.detach().contiguous(), right=True) - 1
    idx = idx.clamp(0, T - 2)
    t0, t1 = torch.gather(t, -1, idx), torch.gather(t, -1, idx + 1)
    v0, v1 = torch.gather(v, -1, idx), torch.gather(v, -1, idx + 1)
    dt = t1 - t0
    pos = dt > 0
    w = (tq - t0) / torch.where(pos, dt, torch.ones_like(dt))
    w = torch.where(pos, w, torch.zeros_like(w)).clamp(0.0, 1.0)
    out = v0 * (1 - w) + v1 * w  # exact at both ends of a segment
    if outside == "nan":
        bad = (tq < t[..., :1]) | (tq > t[..., -1:])
        out = torch.where(bad, torch.full_like(out, math.nan), out)
    return out


def value_at(t, v, t0) -> Tensor:
    """Value at time ``t0`` (scalar, or one time per batch row: shape (...,)) by linear interpolation; NaN outside the grid."""
    t, v = _prepare(t, v)
    tq = _as_tensor(t0, like=v).to(v.dtype).unsqueeze(-1)
    return interp(t, v, tq, outside="nan").squeeze(-1)


def integral(t, v) -> Tensor:
    """Trapezoidal integral of v over t along the last dimension."""
    t, v = _prepare(t, v)
    return (0.5 * (v[..., 1:] + v[..., :-1]) * (t[..., 1:] - t[..., :-1])).sum(dim=-1)


def mean(t, v) -> Tensor:
    """Time-weighted (trapezoidal) mean of v over the window."""
    t, v = _prepare(t, v)
    return integral(t, v) / _span(t)


def rms(t, v) -> Tensor:
    """Time-weighted RMS: sqrt(trapezoid of v**2 over t / window length) (zero gradient at exactly 0)."""
    t, v = _prepare(t, v)
    return _safe_sqrt(mean(t, v * v))


CONSTANT_RTOL = 1e-9  # a reference whose swing is below this fraction of its size is constant


def nrmse(t_ref, v_ref, t, v) -> Tensor:
    """RMS of (v interpolated onto t_ref) - v_ref (trapezoidal, time-weighted) divided by peak-to-peak of v_ref.

    (t, v) is held at its end values outside its own grid.  If v_ref is constant (its peak-to-peak
    at most CONSTANT_RTOL of max|v_ref|: rounding noise) the divisor falls back to max|v_ref|, and
    to 1 (an absolute RMS error) if v_ref is identically zero.
    """
    t_ref, v_ref = _prepare(t_ref, v_ref)
    on_ref = interp(t, v, t_ref)
    t_ref, v_ref, on_ref = torch.broadcast_tensors(t_ref, v_ref, on_ref)
    err = rms(t_ref, on_ref - v_ref)
    scale = peak_to_peak(v_ref)
    amax = v_ref.abs().amax(dim=-1)
    scale = torch.where(scale > CONSTANT_RTOL * amax, scale,
                        torch.where(amax > 0, amax, torch.ones_like(amax)))
    return err / scale


# ----------------------------------------------------------------------------------------------------
# DataFrames
# ----------------------------------------------------------------------------------------------------


def _find_column(df: pd.DataFrame, column: str) -> str:
    cols = [str(c) for c in df.columns]
    if column in cols:
        return column
    folded = [c for c in cols if c.lower() == column.lower()]
    if len(folded) == 1:
        return folded[0]
    raise MeasureError(f"column {column!r} not in waveform table; available columns: {', '.join(cols) or '(none)'}")


def series(df: pd.DataFrame, column: str) -> tuple[Tensor, Tensor]:
    """``(t, v)`` float64 tensors from a DataFrame's ``time`` column and ``column`` (case-insensitive fallback)."""
    tcol = _find_column(df, TIME_COLUMN)
    vcol = _find_column(df, column)
    t = torch.as_tensor(df[tcol].to_numpy(dtype="float64", copy=True))
    v = torch.as_tensor(df[vcol].to_numpy(dtype="float64", copy=True))
    if t.numel() < 2:
        raise MeasureError(f"waveform table has {t.numel()} time point(s); need at least 2")
    if bool((t[1:] < t[:-1]).any()):
        raise MeasureError(f"column {tcol!r} is not non-decreasing")
    return t, v


def compare(ref: pd.DataFrame, other: pd.DataFrame, columns: Iterable[str] | None = None) -> dict[str, float]:
    """NRMSE (see `nrmse`) of ``other`` against ``ref`` per common non-time column, plus key ``"worst"`` (max; NaN if any is NaN)."""
    if columns is None:
        other_cols = {str(c).lower() for c in other.columns}
        columns = [
            str(c) for c in ref.columns if str(c).lower() != TIME_COLUMN and str(c).lower() in other_cols
        ]
        if not columns:
            raise MeasureError(
                "compare: the two waveform tables have no common columns besides 'time' "
                f"(ref: {', '.join(map(str, ref.columns))}; other: {', '.join(map(str, other.columns))})"
            )
    else:
        columns = list(columns)
    out: dict[str, float] = {}
    for col in columns:
        tr, vr = series(ref, col)
        to, vo = series(other, col)
        out[col] = float(nrmse(tr, vr, to, vo))
    vals = list(out.values())
    out["worst"] = math.nan if any(math.isnan(x) for x in vals) else (max(vals) if vals else math.nan)
    return out
