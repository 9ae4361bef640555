"""Evaluators: designs (B, P) -> measurements (B, M), with one interface over three simulators.

* `SurrogateEvaluator`: the PINN surrogate, batched and differentiable; crossing times are exact roots
  of the network output with implicit-function gradients (`optimize.crossing`).
* `ReferenceEvaluator`: the reference solver (`circuits.simulation.simulate_batch`); differentiable
  when the designs require grad (shared steps), otherwise per-design steps.
* `NgspiceEvaluator`: ngspice, one subprocess per design, no gradients.

Each counts ``calls`` (designs simulated) and ``wall_s`` (seconds spent simulating + measuring).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import torch
from torch import Tensor

from circuits import measure as M
from circuits.circuit import Circuit
from circuits.errors import ConfigError, ConvergenceError, NeuroSpiceError, NgspiceError
from optimize.crossing import refine_crossings
from optimize.measurements import Measurement, crossing_level, measure_sampled, window_slice

__all__ = ["Evaluator", "SurrogateEvaluator", "ReferenceEvaluator", "NgspiceEvaluator", "signals_of"]


def signals_of(measurements: Sequence[Measurement]) -> list[str]:
    """Union of the waveform names the measurements read, in first-use order."""
    out: list[str] = []
    for m in measurements:
        for s in m.signals():
            if s not in out:
                out.append(s)
    return out


def _columns(meas: Measurement, signals: list[str], Y: Tensor) -> Tensor:
    return Y[..., [signals.index(s) for s in meas.signals()]]


class Evaluator:
    """Base class: `measure(P, measurements)` -> (B, M) tensor; counts designs simulated."""

    name = "evaluator"
    differentiable = False

    def __init__(self, circuit: Circuit):
        self.circuit = circuit
        self.calls = 0
        self.failures = 0
        self.wall_s = 0.0
        self.last_error: str | None = None  # the simulator's message for the latest design measured NaN

    def measure(self, P: Tensor, measurements: Sequence[Measurement]) -> Tensor:
        """Measurements (B, M) of designs P (B, P) (full design vectors ordered like the space).

        A design the simulator cannot simulate (no convergence, ngspice failure) measures NaN: a
        failed batch is retried design by design so that one bad design does not sink the others.
        """
        t0 = time.perf_counter()
        measurements = list(measurements)
        try:
            try:
                out = self._measure(P, measurements)
            except (ConvergenceError, NgspiceError) as exc:
                if P.shape[0] == 1:
                    self.failures += 1
                    self.last_error = str(exc)
                    out = torch.full((1, len(measurements)), math.nan, dtype=P.dtype)
                else:
                    out = torch.cat([self._measure_or_nan(P[i:i + 1], measurements) for i in range(P.shape[0])])
        finally:
            self.wall_s += time.perf_counter() - t0
        self.calls += int(P.shape[0])
        return out

    def _measure_or_nan(self, P: Tensor, measurements: list[Measurement]) -> Tensor:
        try:
            return self._measure(P, measurements)
        except (ConvergenceError, NgspiceError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            return torch.full((1, len(measurements)), math.nan, dtype=P.dtype)

    def _measure(self, P: Tensor, measurements: list[Measurement]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def check_signals(self, names: Sequence[str], known: Sequence[str]) -> None:
        """ConfigError naming the unknown waveform(s)."""
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigError(f"circuit '{self.circuit.name}': unknown signal(s) {bad} in the task's "
                              f"measurement (known: {', '.join(known)})")


def _default_points(circuit: Circuit, cap: int = 8001) -> int:
    """Grid points over [0, tstop]: one per .tran step, at most ``cap``."""
    return int(min(cap, max(1001, round(circuit.tstop / circuit.tstep) + 1)))


class ReferenceEvaluator(Evaluator):
    """The reference solver (float64); differentiable in P when P requires grad."""

    name = "reference"
    differentiable = True

    def __init__(self, circuit: Circuit, rtol: float = 1e-5, points: int | None = None):
        super().__init__(circuit)
        from circuits.simulation import dae_of

        self.rtol = float(rtol)
        self.t = torch.linspace(0.0, circuit.tstop, points or _default_points(circuit), dtype=torch.float64)
        self._known = list(dae_of(circuit).names)

    def _measure(self, P: Tensor, measurements: list[Measurement]) -> Tensor:
        from circuits.simulation import simulate_batch

        signals = signals_of(measurements)
        self.check_signals(signals, self._known)
        _, Y = simulate_batch(self.circuit, P, t=self.t, outputs=signals, rtol=self.rtol)
        return torch.stack([measure_sampled(m, self.t, _columns(m, signals, Y)) for m in measurements], dim=-1)


class NgspiceEvaluator(Evaluator):
    """ngspice, one deck per design, measured on ngspice's own time points (no gradients)."""

    name = "ngspice"

    def __init__(self, circuit: Circuit, jobs: int = 1, timeout: float = 120.0):
        from circuits.ngspice import ngspice_executable

        super().__init__(circuit)
        ngspice_executable()  # fail now, with the install hint, rather than NaN for every design
        self.jobs = int(jobs)
        self.timeout = float(timeout)
        self._decks: dict[tuple[str, ...], Circuit] = {}

    def _circuit_for(self, signals: list[str]) -> Circuit:
        key = tuple(signals)
        if key not in self._decks:
            self._decks[key] = dataclasses.replace(self.circuit, outputs=list(signals))
        return self._decks[key]

    def _measure(self, P: Tensor, measurements: list[Measurement]) -> Tensor:
        from circuits.ngspice import run_ngspice_batch

        signals = signals_of(measurements)
        circuit = self._circuit_for(signals)
        space = self.circuit.space
        designs = [space.to_dict(p) for p in P.detach().to(torch.float64)]
        frames = run_ngspice_batch(circuit, designs, progress=False, jobs=self.jobs, timeout=self.timeout)
        rows = []
        for df in frames:
            t = torch.as_tensor(df["time"].to_numpy(dtype="float64", copy=True))
            Y = torch.stack([torch.as_tensor(df[s].to_numpy(dtype="float64", copy=True)) for s in signals],
                            dim=-1).unsqueeze(0)
            rows.append(torch.stack([measure_sampled(m, t, _columns(m, signals, Y))[0] for m in measurements]))
        return torch.stack(rows).to(P.dtype)


class SurrogateEvaluator(Evaluator):
    """The PINN surrogate: batched, differentiable, crossings refined to exact roots (IFT gradients).

    ``points``: samples of each measurement window used to locate crossings and extremes;
    ``newton_steps``: detached Newton steps polishing each crossing before the IFT step.
    """

    name = "surrogate"
    differentiable = True

    def __init__(self, surrogate, points: int = 501, newton_steps: int = 2, float64: bool = True,
                 chunk: int = 256):
        super().__init__(surrogate.circuit)
        self.surrogate = surrogate
        if float64 and hasattr(surrogate, "set_net_dtype"):
            surrogate.set_net_dtype(torch.float64)
        self.points = int(points)
        self.newton_steps = int(newton_steps)
        self.chunk = int(chunk)
        self._known = list(surrogate.names)

    def grid(self, meas: Measurement) -> Tensor:
        """Sampling grid (T,) of one measurement's window."""
        lo, hi = meas.window if meas.window is not None else (0.0, self.circuit.tstop)
        return torch.linspace(max(0.0, lo), min(hi, self.circuit.tstop), self.points, dtype=torch.float64)

    def _measure(self, P: Tensor, measurements: list[Measurement]) -> Tensor:
        self.check_signals(signals_of(measurements), self._known)
        if P.shape[0] > self.chunk and not P.requires_grad:
            return torch.cat([self._measure(P[i:i + self.chunk], measurements)
                              for i in range(0, P.shape[0], self.chunk)])
        return torch.stack([self._one(P, m) for m in measurements], dim=-1)

    def _one(self, P: Tensor, meas: Measurement) -> Tensor:
        on_cycle = self._on_cycle(P, meas)
        return on_cycle if on_cycle is not None else self._sampled(P, meas)

    def _sampled(self, P: Tensor, meas: Measurement) -> Tensor:
        """The measurement from the surrogate's waveforms sampled on its window (crossings refined)."""
        t = self.grid(meas)
        needs_samples_graph = (not meas.is_crossing) or meas.level is None
        with torch.set_grad_enabled(torch.is_grad_enabled() and needs_samples_graph):
            Y = self.surrogate.predict_batch(t, P, outputs=meas.signals())
        if not meas.is_crossing:
            return measure_sampled(meas, t, Y)
        keep = window_slice(meas, t)
        t, v = t[keep], Y[:, keep, 0]
        level = crossing_level(meas, t, v)            # (B,), with graph when it depends on p
        ns = meas.crossing_numbers()
        with torch.no_grad():
            t0 = torch.stack([M.cross_time(t, v, level, meas.direction, n) for n in ns], dim=-1)  # (B, m)
        B, m = t0.shape
        step = float(t[1] - t[0])
        signal = meas.signal

        def fn(tt: Tensor, PP: Tensor) -> tuple[Tensor, Tensor]:
            y, ydot = self.surrogate.at(tt, PP, [signal])
            return y[:, 0], ydot[:, 0]

        times = refine_crossings(fn, t0.reshape(-1), P.repeat_interleave(m, dim=0),
                                 level.repeat_interleave(m, dim=0), newton_steps=self.newton_steps,
                                 max_shift=step).reshape(B, m)
        return meas.combine(times)

    def _on_cycle(self, P: Tensor, meas: Measurement) -> Tensor | None:
        """A frequency or period read off a limit-cycle surrogate's learned frequency, for the designs
        whose measured periods lie on the cycle (the other designs measured from waveforms); None
        when the model has no cycle or the measurement does not qualify."""
        model = self.surrogate
        if (meas.kind not in ("frequency", "period") or meas.level is None or not hasattr(model, "cycle_frequency")
                or meas.signal not in self._known):
            return None
        try:
            hz, crossed, begins = model.cycle_frequency(P, meas.signal, float(meas.level))
        except NeuroSpiceError:  # the signal is not on the cycle's learned unknowns
            return None
        end = min(meas.window[1], self.circuit.tstop) if meas.window is not None else self.circuit.tstop
        # the k periods measured (and one more: where the last crossing falls) lie on the cycle
        usable = crossed & (end - (meas.k + 1) / hz.detach() >= begins)
        value = hz if meas.kind == "frequency" else 1.0 / hz
        if bool(usable.all()):
            return value
        rest = torch.nonzero(~usable).flatten()
        slow = self._sampled(P[rest], meas)
        return value.index_put((rest,), slow.to(value.dtype))

