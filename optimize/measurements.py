"""Design measurements (frequency, delay, gain, switching time, power) from sampled waveforms.

A `Measurement` is plain data read from a task config.  `measure_sampled` computes it for a batch
of sampled waveforms ``(t (T,), Y (B, T, S))`` with `circuits.measure`, so surrogate, reference and
ngspice waveforms are measured by the same code.  Crossing-based kinds are also described as a list
of crossings plus a `combine` step, so that the surrogate evaluator can replace each sampled crossing
by an exact root of the continuous network output (see `optimize.crossing`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from circuits import measure as M
from circuits.errors import ConfigError

__all__ = ["Measurement", "KINDS", "CROSSING_KINDS", "measure_sampled", "window_slice", "crossing_level"]

#: crossing-based kinds: value = combine(crossing times of one signal through one level)
CROSSING_KINDS = ("frequency", "period", "delay", "switch_time")
#: kinds computed from sample values (peak-to-peak, time average)
VALUE_KINDS = ("gain", "power")
KINDS = CROSSING_KINDS + VALUE_KINDS

_UNITS = {"frequency": "Hz", "period": "s", "delay": "s", "switch_time": "s", "gain": "V/V", "power": "W"}


@dataclass(frozen=True)
class Measurement:
    """One scalar measurement of a design's waveforms (see the module docstring for the kinds).

    * ``frequency`` / ``period``: mean over the last ``k`` periods of ``signal`` from its crossings
      of ``level`` in ``direction`` (``both``: rising and falling) inside ``window``.
    * ``delay`` / ``switch_time``: the ``n``-th crossing of ``level`` inside ``window`` minus ``t_ref``.
    * ``gain``: peak-to-peak of ``signal`` over ``window`` / peak-to-peak of ``input`` over it.
    * ``power``: ``-supply`` times the time average of the current ``signal`` (e.g. ``i(vdd)``).

    ``level`` None means the midpoint of min and max over the second half of the window, computed per
    design (``circuits.measure`` convention).
    """

    kind: str
    signal: str
    level: float | None = None
    direction: str = "rise"
    k: int = 1
    n: int = 1
    t_ref: float = 0.0
    window: tuple[float, float] | None = None
    input: str | None = None
    supply: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"measurement kind {self.kind!r} unknown (known: {', '.join(KINDS)})")
        if self.direction not in ("rise", "fall", "both"):
            raise ConfigError(f"measurement direction must be rise, fall or both, got {self.direction!r}")
        if self.kind == "gain" and not self.input:
            raise ConfigError("a gain measurement needs 'input' (the signal in the denominator)")
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"measurement k must be a positive integer, got {self.k!r}")
        if not isinstance(self.n, int) or self.n == 0:
            raise ConfigError(f"measurement n must be a nonzero integer, got {self.n!r}")
        if self.window is not None and not (self.window[0] < self.window[1]):
            raise ConfigError(f"measurement window {self.window} must be (start, stop) with start < stop")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Measurement":
        """Build from a config mapping ``{kind, signal, level, direction, k, n, t_ref, window, input, supply}``."""
        cfg = dict(cfg)
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known
        if unknown:
            raise ConfigError(f"measurement: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        for key in ("kind", "signal"):
            if not cfg.get(key):
                raise ConfigError(f"measurement: missing {key!r}")
        window = cfg.get("window")
        if window is not None:
            if len(window) != 2:
                raise ConfigError(f"measurement window must be [start, stop], got {window!r}")
            window = (float(window[0]), float(window[1]))
        return cls(kind=str(cfg["kind"]), signal=str(cfg["signal"]).lower(),
                   level=None if cfg.get("level") is None else float(cfg["level"]),
                   direction=str(cfg.get("direction", "rise")), k=int(cfg.get("k", 1)),
                   n=int(cfg.get("n", 1)), t_ref=float(cfg.get("t_ref", 0.0)), window=window,
                   input=None if cfg.get("input") is None else str(cfg["input"]).lower(),
                   supply=float(cfg.get("supply", 1.0)))

    @property
    def unit(self) -> str:
        """SI unit of the measured value."""
        return _UNITS[self.kind]

    @property
    def is_crossing(self) -> bool:
        """True for kinds built from threshold-crossing times."""
        return self.kind in CROSSING_KINDS

    def signals(self) -> list[str]:
        """Waveform names this measurement reads, in the column order `measure_sampled` expects."""
        return [self.signal] + ([self.input] if self.kind == "gain" else [])

    def crossing_numbers(self) -> list[int]:
        """Which crossings (1 = first, -1 = last, as `circuits.measure.cross_time`) the value is built from."""
        if self.kind in ("frequency", "period"):
            need = 2 * self.k + 1 if self.direction == "both" else self.k + 1
            return [-need, -1]
        if self.kind in ("delay", "switch_time"):
            return [self.n]
        return []

    def combine(self, times: Tensor) -> Tensor:
        """Measurement (B,) from crossing times (B, len(crossing_numbers())) (NaN propagates)."""
        if self.kind in ("frequency", "period"):
            per = (times[:, 1] - times[:, 0]) / self.k
            return 1.0 / per if self.kind == "frequency" else per
        return times[:, 0] - self.t_ref

    def describe(self) -> str:
        """Short human-readable description, e.g. ``frequency of v(n1)``."""
        if self.kind == "gain":
            return f"gain {self.signal}/{self.input}"
        return f"{self.kind} of {self.signal}"


def window_slice(meas: Measurement, t: Tensor) -> Tensor:
    """Boolean mask (T,) of grid points inside the measurement window (the whole grid if None)."""
    if meas.window is None:
        return torch.ones_like(t, dtype=torch.bool)
    lo, hi = meas.window
    span = float(t[-1] - t[0]) if t.numel() > 1 else 1.0
    eps = 1e-9 * span  # keep grid points that sit on the window's ends despite rounding
    return (t >= lo - eps) & (t <= hi + eps)


def crossing_level(meas: Measurement, t: Tensor, v: Tensor) -> Tensor:
    """Crossing level per design (B,): the configured level, or the mid-swing of the late window."""
    if meas.level is not None:
        return torch.full(v.shape[:-1], meas.level, dtype=v.dtype, device=v.device)
    return M._default_level(t, v)


def measure_sampled(meas: Measurement, t: Tensor, Y: Tensor) -> Tensor:
    """Measurement (B,) from sampled waveforms t (T,), Y (B, T, S) whose columns are `meas.signals()`.

    Differentiable in Y through linear interpolation (crossings) and the sample extremes; NaN where
    the measurement does not exist (e.g. too few crossings inside the window).
    """
    t = torch.as_tensor(t, dtype=Y.dtype)
    keep = window_slice(meas, t)
    if int(keep.sum()) < 2:
        raise ConfigError(f"measurement window {meas.window} holds fewer than 2 time points of the grid "
                          f"[{float(t[0]):g}, {float(t[-1]):g}] s")
    t, Y = t[keep], Y[:, keep, :]
    v = Y[..., 0]
    if meas.kind == "gain":
        return M.peak_to_peak(v) / M.peak_to_peak(Y[..., 1])
    if meas.kind == "power":
        return -meas.supply * M.mean(t, v)
    level = crossing_level(meas, t, v)
    times = torch.stack([M.cross_time(t, v, level, meas.direction, n) for n in meas.crossing_numbers()], dim=-1)
    return meas.combine(times)

