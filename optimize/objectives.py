"""Objective J(p) = ((m(p) - target) / scale)^2 + sum of weighted penalties, batched over designs.

The measurement m comes from any evaluator (`optimize.evaluators`); penalties are either a sum of
design parameters relative to its nominal value (``params: [wn, wp]``: area ∝ W) or a second
measurement divided by a scale (``measurement: {kind: power, ...}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor

from circuits.errors import ConfigError
from circuits.params import ParamSpace
from optimize.measurements import Measurement

__all__ = ["Penalty", "Objective", "FAIL_OBJECTIVE"]

#: objective of a design whose measurement does not exist (no oscillation, no switching ...)
FAIL_OBJECTIVE = 1.0e3


@dataclass(frozen=True)
class Penalty:
    """A weighted penalty: ``weight * sum(p[params]) / sum(nominal[params])`` or ``weight * m / scale``."""

    name: str
    weight: float
    params: tuple[str, ...] = ()
    measurement: Measurement | None = None
    scale: float = 1.0

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any], space: ParamSpace) -> "Penalty":
        """Build from ``{weight, params: [...]}`` or ``{weight, measurement: {...}, scale}``."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"task.penalties.{name}={cfg!r}: expected {{weight: W, params: [...]}} "
                              f"or {{weight: W, measurement: {{...}}}}")
        cfg = dict(cfg)
        unknown = set(cfg) - {"weight", "params", "measurement", "scale"}
        if unknown:
            raise ConfigError(f"penalty '{name}': unknown keys {sorted(unknown)}")
        params = tuple(str(p).lower() for p in (cfg.get("params") or ()))
        meas = cfg.get("measurement")
        if bool(params) == bool(meas):
            raise ConfigError(f"penalty '{name}': give exactly one of 'params' or 'measurement'")
        bad = [p for p in params if p not in space.names]
        if bad:
            raise ConfigError(f"penalty '{name}': unknown parameter(s) {bad}; design parameters are {space.names}")
        scale = float(cfg.get("scale", 1.0))
        if not scale > 0:
            raise ConfigError(f"penalty '{name}': scale must be > 0")
        return cls(name=name, weight=float(cfg.get("weight", 0.0)), params=params,
                   measurement=Measurement.from_config(meas) if meas else None, scale=scale)


@dataclass
class Objective:
    """J(p) for a target value of one measurement, plus penalties; see the module docstring."""

    measurement: Measurement
    target: float
    space: ParamSpace
    scale: float | None = None
    penalties: list[Penalty] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.target = float(self.target)
        if not math.isfinite(self.target):
            raise ConfigError(f"target must be a finite number, got {self.target!r}")
        if self.scale is None:
            self.scale = abs(self.target) if self.target != 0 else 1.0
        if not self.scale > 0:
            raise ConfigError(f"objective scale must be > 0, got {self.scale!r}")
        self.penalties = [p for p in self.penalties if p.weight != 0.0]

    @property
    def has_penalties(self) -> bool:
        """True if some penalty has a nonzero weight (then J is a trade-off, not just a target match)."""
        return bool(self.penalties)

    def measurements(self) -> list[Measurement]:
        """The measurements an evaluator must return, main one first (column order of `__call__`'s M)."""
        return [self.measurement] + [p.measurement for p in self.penalties if p.measurement is not None]

    def penalty_terms(self, P: Tensor, values: Tensor) -> dict[str, Tensor]:
        """Each weighted penalty (B,) by name."""
        out: dict[str, Tensor] = {}
        col = 1
        nominal = self.space.nominal_vector(P.dtype)
        for pen in self.penalties:
            if pen.measurement is not None:
                out[pen.name] = pen.weight * values[:, col] / pen.scale
                col += 1
            else:
                idx = [self.space.names.index(n) for n in pen.params]
                out[pen.name] = pen.weight * P[:, idx].sum(-1) / nominal[idx].sum()
        return out

    def __call__(self, P: Tensor, values: Tensor) -> Tensor:
        """J (B,) from designs P (B, P) and evaluator values (B, M); `FAIL_OBJECTIVE` where m is NaN."""
        bad = ~torch.isfinite(values).all(dim=-1)
        # NaN rows are replaced *before* any arithmetic so that their (zero) gradients stay finite
        safe = torch.where(bad.unsqueeze(-1), torch.full_like(values, self.target), values)
        J = ((safe[:, 0] - self.target) / self.scale) ** 2
        for term in self.penalty_terms(P, safe).values():
            J = J + term
        return torch.where(bad, torch.full_like(J, FAIL_OBJECTIVE), J)

    def rel_error(self, m: Tensor | float) -> Tensor | float:
        """(m - target) / |target| (signed; the unscaled relative error that tolerances refer to).

        A target of 0 has no relative error but 0 (m = 0) or an infinite one, never m itself."""
        if self.target != 0:
            return (m - self.target) / abs(self.target)
        if isinstance(m, Tensor):
            return torch.where(m == 0, torch.zeros_like(m), torch.sign(m) * math.inf)
        return 0.0 if m == 0 else math.copysign(math.inf, m)

    def summary(self, P: Tensor, values: Tensor) -> list[dict[str, float]]:
        """Per design: measured value, objective, relative error and penalty terms, as floats."""
        with torch.no_grad():
            J = self(P, values)
            pens = self.penalty_terms(P, values)
        rows = []
        for b in range(P.shape[0]):
            m = float(values[b, 0])
            row = {"value": m, "objective": float(J[b]), "rel_error": float(self.rel_error(m))}
            row.update({f"penalty_{k}": float(v[b]) for k, v in pens.items()})
            rows.append(row)
        return rows
