"""Re-simulate a proposed design with the reference solver and ngspice: the achieved objective is this one."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from circuits.errors import NeuroSpiceError
from optimize.evaluators import Evaluator, NgspiceEvaluator, ReferenceEvaluator
from optimize.tasks import Task

__all__ = ["verify_design", "verify_with"]


def verify_with(task: Task, evaluator: Evaluator, design: Tensor) -> dict[str, Any]:
    """``{"value", "objective", "rel_error", "within_tolerance", "wall_s", ...penalties}`` of one design."""
    t0 = time.perf_counter()
    P = design.detach().to(torch.float64).reshape(1, -1)
    with torch.no_grad():
        values = evaluator.measure(P, task.objective.measurements())
    row = task.objective.summary(P, values)[0]
    if not math.isfinite(row["value"]):
        row["rel_error"] = math.nan
    row["within_tolerance"] = bool(math.isfinite(row["rel_error"]) and abs(row["rel_error"]) <= task.tolerance)
    row["wall_s"] = time.perf_counter() - t0
    return row


def verify_design(task: Task, design: Tensor, *, reference: bool = True, ngspice: bool = True,
                  rtol: float = 1e-5, cached: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{"reference": {...}, "ngspice": {...}}`` for one design (see `verify_with`).

    A simulator that is switched off reports ``{"status": "skipped"}``; ngspice missing on this
    machine reports ``{"status": "unavailable"}``; a simulator error ``{"status": "failed", "error"}``.
    ``cached`` entries (a verification already made of this very design) are reused as they are.
    """
    from circuits.ngspice import ngspice_available

    cached = cached or {}
    out: dict[str, dict[str, Any]] = {}
    wanted = {"reference": reference, "ngspice": ngspice}
    for name, on in wanted.items():
        if name in cached:
            out[name] = cached[name]
            continue
        if not on:
            out[name] = {"status": "skipped"}
            continue
        if name == "ngspice" and not ngspice_available():
            out[name] = {"status": "unavailable"}
            continue
        ev = ReferenceEvaluator(task.circuit, rtol=rtol) if name == "reference" else NgspiceEvaluator(task.circuit)
        try:
            row = verify_with(task, ev, design)
        except NeuroSpiceError as exc:
            out[name] = {"status": "failed", "error": str(exc)}
            continue
        if math.isfinite(row["value"]):
            out[name] = {"status": "ok", **row}
        else:  # the simulator failed (its message), or its waveform never shows the measured event
            out[name] = {"status": "failed", "error": ev.last_error or
                         f"no {task.objective.measurement.describe()} in the simulated waveform"}
    return out
