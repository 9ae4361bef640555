"""Design-parameter space: names, bounds, log scaling, nominal values, sampling, Optuna suggest."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from circuits.errors import ConfigError

__all__ = ["Param", "ParamSpace"]


@dataclass(frozen=True)
class Param:
    """One design parameter: SI bounds, log flag and nominal value."""

    name: str
    low: float
    high: float
    log: bool = False
    nominal: float | None = None

    def __post_init__(self) -> None:
        if not (self.low < self.high):
            raise ConfigError(f"parameter '{self.name}': low {self.low:g} must be < high {self.high:g}")
        if self.log and self.low <= 0:
            raise ConfigError(f"parameter '{self.name}': log scale needs a positive lower bound")
        nom = self.center if self.nominal is None else self.nominal
        if not (self.low <= nom <= self.high):
            raise ConfigError(f"parameter '{self.name}': nominal {nom:g} outside [{self.low:g}, {self.high:g}]")
        object.__setattr__(self, "nominal", float(nom))

    @property
    def center(self) -> float:
        """Geometric (log) or arithmetic midpoint of the bounds."""
        return math.sqrt(self.low * self.high) if self.log else 0.5 * (self.low + self.high)


class ParamSpace:
    """An ordered box of design parameters; vectors are ordered like `names`."""

    def __init__(self, params: list[Param]):
        self.params = list(params)
        self.names = [p.name for p in self.params]
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"duplicate parameter names in {self.names}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Mapping[str, Any]] | None) -> "ParamSpace":
        """Build from ``{name: {low, high, log, nominal}}``."""
        params = []
        for name, spec in (cfg or {}).items():
            unknown = set(spec) - {"low", "high", "log", "nominal"}
            if unknown:
                raise ConfigError(f"parameter '{name}': unknown keys {sorted(unknown)}")
            try:
                params.append(Param(str(name).lower(), float(spec["low"]), float(spec["high"]),
                                    bool(spec.get("log", False)),
                                    None if spec.get("nominal") is None else float(spec["nominal"])))
            except KeyError as exc:
                raise ConfigError(f"parameter '{name}': missing {exc.args[0]!r}") from None
        return cls(params)

    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self):
        return iter(self.params)

    def __repr__(self) -> str:
        inner = ", ".join(f"{p.name}∈[{p.low:g},{p.high:g}]{' log' if p.log else ''}" for p in self.params)
        return f"ParamSpace({inner})"

    @property
    def dim(self) -> int:
        """Number of design parameters."""
        return len(self.params)

    def bounds(self, dtype=torch.float64) -> tuple[Tensor, Tensor]:
        """(low, high) tensors."""
        return (torch.tensor([p.low for p in self.params], dtype=dtype),
                torch.tensor([p.high for p in self.params], dtype=dtype))

    def nominal(self) -> dict[str, float]:
        """Nominal design as a dict."""
        return {p.name: p.nominal for p in self.params}

    def nominal_vector(self, dtype=torch.float64) -> Tensor:
        """Nominal design as a (P,) tensor."""
        return torch.tensor([p.nominal for p in self.params], dtype=dtype)

    def _log_mask(self, like: Tensor) -> Tensor:
        return torch.tensor([p.log for p in self.params], device=like.device)

    def _warp(self, x: Tensor, log: Tensor) -> Tensor:
        """Log where the parameter is log-scaled, identity elsewhere."""
        return torch.where(log, torch.log(torch.where(log, x, torch.ones_like(x))), x)

    def to_unit(self, values: Tensor) -> Tensor:
        """Map (..., P) SI values into the unit cube (log parameters in log space)."""
        lo, hi = (b.to(values) for b in self.bounds())
        log = self._log_mask(values)
        lo_w, hi_w = self._warp(lo, log), self._warp(hi, log)
        return (self._warp(values, log) - lo_w) / (hi_w - lo_w)

    def from_unit(self, u: Tensor) -> Tensor:
        """Map (..., P) unit-cube coordinates to SI values."""
        lo, hi = (b.to(u) for b in self.bounds())
        log = self._log_mask(u)
        lo_w, hi_w = self._warp(lo, log), self._warp(hi, log)
        w = lo_w + u * (hi_w - lo_w)
        # exp only where log: exp of a large linear value is inf, and inf·0 would poison the gradient
        return torch.where(log, torch.exp(torch.where(log, w, torch.zeros_like(w))), w)

    def sample_sobol(self, n: int, seed: int = 0, dtype=torch.float64, margin: float = 0.0) -> Tensor:
        """n scrambled-Sobol designs (n, P) in SI units.

        margin m > 0 stretches the unit cube to [−m, 1 + m] and clamps it back, so a share
        2m/(1+2m) of each coordinate lies exactly on a face of the box (more weight on its faces
        and corners, where a fit extrapolates)."""
        if self.dim == 0:
            return torch.zeros(n, 0, dtype=dtype)
        engine = torch.quasirandom.SobolEngine(self.dim, scramble=True, seed=seed)
        u = engine.draw(n, dtype=dtype)
        if margin > 0:
            u = torch.clamp(u * (1 + 2 * margin) - margin, 0.0, 1.0)
        return self.from_unit(u)

    def corners(self, limit: int = 64, seed: int = 0, dtype=torch.float64) -> Tensor:
        """The box's 2^P corners (designs, in SI units); over `limit` of them, `limit` drawn at random."""
        if self.dim == 0:
            return torch.zeros(0, 0, dtype=dtype)
        if 2 ** self.dim <= limit:
            bits = torch.arange(2 ** self.dim).unsqueeze(1).bitwise_right_shift(torch.arange(self.dim)) & 1
        else:  # (repeats are possible, and harmless)
            bits = torch.randint(0, 2, (limit, self.dim), generator=torch.Generator().manual_seed(seed))
        low, high = self.bounds(dtype)  # on log axes exp(log(high)) may overshoot high: clamped back
        return torch.minimum(torch.maximum(self.from_unit(bits.to(dtype)), low), high)

    def sample_uniform(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        """n i.i.d. uniform designs in the unit cube, mapped to SI units."""
        return self.from_unit(torch.rand(n, self.dim, generator=generator, dtype=dtype))

    def suggest(self, trial) -> dict[str, float]:
        """Ask an Optuna trial for one design."""
        return {p.name: trial.suggest_float(p.name, p.low, p.high, log=p.log) for p in self.params}

    def check(self, values: Mapping[str, float], where: str = "") -> None:
        """Raise ConfigError if a value of a space parameter is outside its bounds."""
        for p in self.params:
            if p.name in values:
                x = float(values[p.name])
                if not (p.low * (1 - 1e-12) <= x <= p.high * (1 + 1e-12)) or math.isnan(x):
                    raise ConfigError(f"{where}parameter '{p.name}'={x:g} outside its range "
                                      f"[{p.low:g}, {p.high:g}]")

    def vector(self, values: Mapping[str, float] | None = None, dtype=torch.float64) -> Tensor:
        """(P,) tensor: nominal design with the given space parameters overridden."""
        values = dict(values or {})
        return torch.tensor([float(values.get(p.name, p.nominal)) for p in self.params], dtype=dtype)

    def to_dict(self, vector: Tensor) -> dict[str, float]:
        """(P,) tensor -> {name: float}."""
        return {n: float(v) for n, v in zip(self.names, vector.tolist())}
