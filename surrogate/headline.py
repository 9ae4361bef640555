"""A circuit's headline measurement (gain, frequency, delay, switching time) on held-out designs.

A circuit config may name the measurement a designer reads off it and how close the surrogate must
get: ``headline: {task: amp_gain, target: 0.01}`` (the task's measurement; worst relative error over
the held-out designs).  Waveform NRMSE alone does not bound it: amp at 1.04 % worst NRMSE had a gain
error of 4.98 % (a peak-to-peak of a small late swing), so the target loop measures it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from circuits.circuit import Circuit
from circuits.errors import ConfigError

__all__ = ["Headline", "headline_spec", "relative_errors"]


def headline_spec(circuit: Circuit) -> tuple[str, float] | None:
    """(task name, target worst relative error) the circuit config declares, or None."""
    spec = (circuit.config or {}).get("headline")
    if not spec:
        return None
    try:
        task, target = str(spec["task"]), float(spec.get("target", 0.01))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"circuit {circuit.name}: headline must be {{task: NAME, target: RELATIVE_ERROR}}, "
                          f"got {spec!r}") from None
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"circuit {circuit.name}: headline target must be a positive number, got {target!r}")
    return task, target


def relative_errors(m: Tensor, m_ref: Tensor) -> Tensor:
    """|m - m_ref| / |m_ref| per design (B,); inf where the measurement exists in only one of the two
    (a FeRAM write that switches in one), 0 where it exists in neither."""
    missing_one = m.isnan() != m_ref.isnan()
    both = ~(m.isnan() | m_ref.isnan())
    rel = torch.zeros_like(m_ref)
    rel[both] = ((m[both] - m_ref[both]) / m_ref[both]).abs()
    rel[missing_one] = math.inf
    return rel


@dataclass
class Headline:
    """The measurement, its target, and its reference values at a set of designs on a time grid."""

    task: str
    measurement: Any  # optimize.measurements.Measurement
    target: float
    ref: Tensor  # (B,) the reference solver's measurement, NaN where it does not exist

    @classmethod
    def declared(cls, circuit: Circuit) -> "tuple[str, Any, float] | None":
        """(task name, its measurement, target) the circuit config declares, or None."""
        spec = headline_spec(circuit)
        if spec is None:
            return None
        from optimize.tasks import load_task

        task, target = spec
        return task, load_task(task).objective.measurement, target

    @classmethod
    def measured(cls, declared: "tuple[str, Any, float]", t: Tensor, y_ref: Tensor) -> "Headline":
        """The `declared` headline measured on reference waveforms y_ref (B, T, S) of its signals on grid t."""
        from optimize.measurements import measure_sampled

        task, meas, target = declared
        return cls(task, meas, target, measure_sampled(meas, t, y_ref))

    @classmethod
    def draw(cls, circuit: Circuit, P: Tensor, t: Tensor, rtol: float = 1e-5) -> "Headline | None":
        """The circuit's headline at designs P on grid t, measured on the reference solver (None if it has none)."""
        declared = cls.declared(circuit)
        if declared is None:
            return None
        from circuits.simulation import simulate_batch

        with torch.no_grad():
            _, y_ref = simulate_batch(circuit, P, t=t, outputs=declared[1].signals(), rtol=rtol)
        return cls.measured(declared, t, y_ref)

    def errors(self, model, P: Tensor, t: Tensor) -> Tensor:
        """The surrogate's relative error (B,) of the measurement at the designs P on grid t."""
        from optimize.measurements import measure_sampled

        with torch.no_grad():
            y = model.predict_batch(t, P, outputs=self.measurement.signals())
        return relative_errors(measure_sampled(self.measurement, t, y), self.ref)

    def summary(self, rel: Tensor) -> dict[str, Any]:
        """Worst and median error (over designs where the measurement exists), the designs where it
        exists in only one of the two, the worst design's index and the target."""
        finite = rel[torch.isfinite(rel)]
        return {"headline": self.measurement.describe(), "headline_task": self.task,
                "headline_target": self.target,
                "headline_err_worst": float(rel.max()) if len(rel) else math.nan,
                "headline_err_median": float(finite.median()) if len(finite) else math.nan,
                "headline_missing": int(torch.isinf(rel).sum()),
                "headline_worst_design_index": int(rel.argmax()) if len(rel) else 0}
