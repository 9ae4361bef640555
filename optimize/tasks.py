"""Design tasks (configs/task/*.yaml): circuit, free parameters, measurement, target, tolerance, penalties."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from circuits.circuit import Circuit, load_circuit
from circuits.errors import ConfigError
from optimize.measurements import Measurement
from optimize.objectives import Objective, Penalty

__all__ = ["Task", "TASK_DIR", "load_task", "task_from_config", "known_tasks"]

TASK_DIR = Path(__file__).resolve().parent.parent / "configs" / "task"
_KEYS = {"name", "circuit", "free", "fixed", "measurement", "target", "tolerance", "scale", "penalties",
         "description"}


def known_tasks() -> list[str]:
    """Names of the task configs shipped in configs/task."""
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


@dataclass
class Task:
    """One inverse-design problem over a circuit's ParamSpace restricted to the free parameters."""

    name: str
    circuit: Circuit
    free: list[str]
    fixed: dict[str, float]
    objective: Objective
    tolerance: float = 0.01
    description: str = ""
    free_idx: list[int] = field(init=False)

    def __post_init__(self) -> None:
        space = self.circuit.space
        if not self.free:
            raise ConfigError(f"task '{self.name}': no free parameters")
        bad = [p for p in list(self.free) + list(self.fixed) if p not in space.names]
        if bad:
            raise ConfigError(f"task '{self.name}': unknown parameter(s) {bad}; design parameters of "
                              f"circuit '{self.circuit.name}' are {space.names}")
        both = sorted(set(self.free) & set(self.fixed))
        if both:
            raise ConfigError(f"task '{self.name}': parameter(s) {both} are both free and fixed")
        if len(set(self.free)) != len(self.free):
            raise ConfigError(f"task '{self.name}': free parameters {self.free} repeat a name")
        space.check(self.fixed, where=f"task '{self.name}': fixed ")
        if not self.tolerance > 0:
            raise ConfigError(f"task '{self.name}': tolerance must be > 0, got {self.tolerance!r}")
        self.free_idx = [space.names.index(p) for p in self.free]

    @property
    def space(self):
        """The circuit's full ParamSpace."""
        return self.circuit.space

    @property
    def target(self) -> float:
        """Target value of the measurement (SI)."""
        return self.objective.target

    def base_vector(self, dtype=torch.float64) -> Tensor:
        """Full design (P,): nominal values with the task's fixed values applied."""
        return self.space.vector(self.fixed, dtype=dtype)

    def designs(self, u_free: Tensor) -> Tensor:
        """Full designs (B, P) in SI from free-parameter unit-cube coordinates (B, F) (differentiable).

        Log parameters are interpolated in log space (as `ParamSpace.from_unit`); the mapping is done
        per column so that no exp() of a linear parameter's value enters the graph (its zero-weighted
        infinite derivative would turn the gradient into NaN).  Fixed values are copied exactly.
        """
        base = self.base_vector(u_free.dtype).expand(u_free.shape[0], -1)
        cols = list(base.unbind(-1))
        for j, i in enumerate(self.free_idx):
            prm = self.space.params[i]
            u = u_free[:, j]
            if prm.log:
                lo, hi = math.log(prm.low), math.log(prm.high)
                cols[i] = torch.exp(lo + u * (hi - lo))
            else:
                cols[i] = prm.low + u * (prm.high - prm.low)
        return torch.stack(cols, dim=-1)

    def unit_free(self, P: Tensor) -> Tensor:
        """Free-parameter unit-cube coordinates (B, F) of full designs (B, P)."""
        return self.space.to_unit(P)[:, self.free_idx]

    def params(self, p: Tensor) -> dict[str, float]:
        """Full design (P,) as {name: value in SI}."""
        return self.space.to_dict(p.detach())


def task_from_config(cfg: Mapping[str, Any], circuit: Circuit | None = None) -> Task:
    """Build a Task from a config mapping (a Hydra ``task`` node or a loaded YAML)."""
    cfg = dict(cfg)
    name = str(cfg.get("name", "task"))
    unknown = set(cfg) - _KEYS
    if unknown:
        raise ConfigError(f"task '{name}': unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    for key in ("circuit", "free", "measurement", "target"):
        if cfg.get(key) is None:
            raise ConfigError(f"task '{name}': missing {key!r}")
    circuit = circuit or load_circuit(str(cfg["circuit"]))
    free = [str(p).lower() for p in cfg["free"]]
    fixed = {str(k).lower(): float(v) for k, v in (cfg.get("fixed") or {}).items()}
    meas = Measurement.from_config(cfg["measurement"])
    penalties = [Penalty.from_config(str(k), v, circuit.space) for k, v in (cfg.get("penalties") or {}).items()]
    try:
        target = float(cfg["target"])
    except (TypeError, ValueError):
        raise ConfigError(f"task '{name}': target must be a number, got {cfg['target']!r}") from None
    scale = cfg.get("scale")
    objective = Objective(meas, target, circuit.space, scale=None if scale is None else float(scale),
                          penalties=penalties)
    return Task(name=name, circuit=circuit, free=free, fixed=fixed, objective=objective,
                tolerance=float(cfg.get("tolerance", 0.01)), description=str(cfg.get("description", "")))


def load_task(name: str, **overrides: Any) -> Task:
    """Load configs/task/<name>.yaml (keys in ``overrides`` replace the file's, e.g. ``target=1.2e9``)."""
    from omegaconf import OmegaConf

    path = TASK_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown task '{name}' (known: {', '.join(known_tasks())})")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return task_from_config({**cfg, **overrides})
