"""High-level reference simulation: one design -> DataFrame, many designs -> batched tensor."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from circuits.circuit import Circuit
from circuits.dae import CURRENT_ATOL, NODE_ATOL, CircuitDAE, assemble
from circuits.errors import ConfigError, ConvergenceError
from circuits.solve import TransientResult, interpolate, transient

__all__ = ["simulate", "simulate_frames", "simulate_batch", "simulate_tensor", "dae_of"]

_DAE_CACHE: dict[int, tuple[Circuit, CircuitDAE]] = {}


def dae_of(circuit: Circuit) -> CircuitDAE:
    """The assembled DAE of a circuit (cached per Circuit object)."""
    hit = _DAE_CACHE.get(id(circuit))
    if hit is None or hit[0] is not circuit:
        hit = (circuit, assemble(circuit))
        _DAE_CACHE[id(circuit)] = hit
    return hit[1]


REFERENCE_RTOL = 1e-5  # `circuits.solve.transient`'s default


def netlist_solver_options(circuit: Circuit) -> dict[str, float | str]:
    """Solver settings from the netlist's ``.options``: method trap|gear (gear: BDF2, maxord 2), and
    reltol/abstol/vntol where stricter than the reference's own tolerances, which are already
    stricter than ngspice's defaults (a looser value would only move it away from ngspice's answer)."""
    opts = circuit.netlist.options
    out: dict[str, float | str] = {}
    if "method" in opts:
        out["method"] = "bdf2" if opts["method"] == "gear" else "trap"
    if float(opts.get("reltol", REFERENCE_RTOL)) < REFERENCE_RTOL:
        out["rtol"] = float(opts["reltol"])
    scale = min(float(opts.get("vntol", NODE_ATOL)) / NODE_ATOL,
                float(opts.get("abstol", CURRENT_ATOL)) / CURRENT_ATOL)
    if scale < 1:
        out["atol_scale"] = scale
    return out


def simulate_tensor(circuit: Circuit, designs: Tensor | Sequence[Mapping[str, float]] | None = None,
                    *, extra: Mapping[str, float] | None = None, **solver) -> TransientResult:
    """Transient of a batch of designs (B, P); see `circuits.solve.transient` for the solver options.

    With gradients (or a fixed dt) the batch shares one step sequence (result t: (T,)); no-grad
    adaptive runs default to per-design steps (``steps="per_design"``, result t: (B, T_max) padded,
    ``res.counts`` points per design; for one design t is (T,) and counts None).
    Pass ``steps="shared"`` to force one grid.
    """
    dae = dae_of(circuit)
    bound = dae.bind(circuit.design_matrix(designs) if not isinstance(designs, Tensor) else designs,
                     extra=extra)
    solver.setdefault("uic", circuit.uic)
    for key, value in netlist_solver_options(circuit).items():
        solver.setdefault(key, value)
    try:
        return transient(bound, circuit.tstop, **solver)
    except ConvergenceError as exc:  # the solver knows no file: name the deck that did not run
        if str(exc).startswith(circuit.netlist.file):
            raise
        raise ConvergenceError(f"{circuit.netlist.file}: {exc}") from exc


def _output_times(circuit: Circuit, t, dtype: torch.dtype) -> Tensor:
    """Requested output times as a tensor; every one must lie in [0, tstop] (no extrapolation)."""
    t = torch.as_tensor(t, dtype=dtype)
    if t.numel() and not (bool((t >= 0).all()) and bool((t <= circuit.tstop * (1 + 1e-12)).all())):
        bad = t[(t < 0) | (t > circuit.tstop * (1 + 1e-12))].reshape(-1)[0]
        raise ConfigError(f"circuit '{circuit.name}': output time {float(bad):g} s is outside the "
                          f"simulated window [0, {circuit.tstop:g}] s")
    return t


def simulate_batch(circuit: Circuit, designs: Tensor | Sequence[Mapping[str, float]] | None = None,
                   t: Tensor | None = None, outputs: Sequence[str] | None = None, **solver
                   ) -> tuple[Tensor, Tensor]:
    """(t, y (B, T, n_out)) for many designs; y is interpolated onto t when given.

    With a t grid (T,) the result is (t, y (B, T, n_out)) in either steps mode.  Without one, the
    solver's own points come back: t (T,) for shared steps, or, for per-design steps (the default of
    no-grad batches, see `simulate_tensor`), t (B, T_max) with every design's own grid padded by
    repeating its last point (y likewise).
    """
    res = simulate_tensor(circuit, designs, **solver)
    dae = dae_of(circuit)
    cols = [dae.index(o) for o in (outputs or circuit.outputs)]
    x = res.x[..., cols]
    if t is None:
        return res.t, x
    t = _output_times(circuit, t, res.t.dtype)
    return t, interpolate(res.t, x, t, res.breakpoints, counts=res.counts)


def simulate(circuit: Circuit, params: Mapping[str, float] | None = None, t: Tensor | None = None,
             *, outputs: Sequence[str] | str | None = None, **solver) -> pd.DataFrame:
    """Simulate one design; columns ``time`` then outputs named like ngspice (``v(n1)``, ``i(vdd)``).

    params: design (or any global .param) values in SI; the rest stay nominal.
    t: output times (interpolated, within [0, tstop]); None gives the solver's own time points from
    the .tran tstart on.
    outputs: the circuit's outputs by default, ``"all"`` for every unknown.
    """
    return simulate_frames(circuit, params, [t], outputs=outputs, **solver)[0]


def simulate_frames(circuit: Circuit, params: Mapping[str, float] | None, grids: Sequence[Tensor | None],
                    *, outputs: Sequence[str] | str | None = None, **solver) -> list[pd.DataFrame]:
    """One transient of one design, returned as one DataFrame per time grid (None: solver points)."""
    values = circuit.overrides(params)
    space_values = {k: v for k, v in values.items() if k in circuit.space.names}
    extra = {k: v for k, v in values.items() if k not in circuit.space.names}
    dae = dae_of(circuit)
    names = dae.names if outputs == "all" else list(outputs or circuit.outputs)
    grids = [g if g is None else _output_times(circuit, g, torch.float64) for g in grids]
    frames = []
    with torch.no_grad():
        res = simulate_tensor(circuit, [space_values], extra=extra, **solver)
        x_all = res.x[..., [dae.index(o) for o in names]]
        for t in grids:
            x, tt = x_all, res.t
            if t is not None:
                tt = torch.as_tensor(t, dtype=res.t.dtype)
                x = interpolate(res.t, x_all, tt, res.breakpoints, counts=res.counts)
            elif res.counts is not None:  # per-design steps: this design's own grid
                k = int(res.counts[0])
                tt, x = res.t[0, :k], x_all[:, :k]
            if t is None and circuit.tstart > 0:  # as ngspice: points from tstart on
                keep = tt >= circuit.tstart
                tt, x = tt[keep], x[:, keep]
            frame = pd.DataFrame(x[0].numpy(), columns=names)
            frame.insert(0, "time", tt.numpy())
            frame.attrs["stats"] = res.stats
            frames.append(frame)
    return frames
