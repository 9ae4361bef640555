"""The automatic training recipe: window layout, oscillator handling and budgets read off the circuit.

This is the only place that looks at a circuit to decide how its surrogate is trained, and it reads
the circuit (its sources, its reference waveforms over a few designs, its linearisation), never its
name.  The rules:

- **Autonomous oscillator**: no source varies in time, and the nominal reference run ends on a
  sustained oscillation whose successive cycles agree.  Then the network runs in warped time t·s(p)
  (`time_scale=linearized`), start-up windows cover the time until the cycles agree, and one
  limit-cycle window with a learned frequency takes all later time.
- **Driven or settling circuit**: window edges where the reference waveforms have travelled
  `SWINGS_PER_WINDOW` output swings since the last edge (the most active design and output
  decides), snapped to a nearby source corner; quiet stretches stay one window.  Each window's
  network also sees its start state (a flow map), so a later split or retrain of one window does
  not invalidate the windows after it.
- **Residual rows**: scaled by the geometric mean of the Jacobian scale and the size of their actual
  terms when the two disagree by more than `ROW_SCALE_DISAGREEMENT` on some row (a pinned
  neighbour's transconductance hides small currents from the Jacobian scale).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from circuits.circuit import Circuit
from circuits.simulation import dae_of, simulate_batch, simulate_tensor

__all__ = ["Recipe", "plan", "is_time_varying", "activity_edges", "limit_cycle_start", "max_windows_for"]

log = logging.getLogger(__name__)

#: output swings (peak-to-peak of the most active output) a window may span; one network per window
#: fits about one monotone rise or fall of every output
SWINGS_PER_WINDOW = 1.0

#: reference-solver steps (of its local-truncation-error control) a window may span: where the
#: solver needs many steps (a ferroelectric switching, a fast edge) the network gets short windows
STEPS_PER_WINDOW = 24

#: the most windows the recipe places before training (the target loop may split further); a
#: smaller budget allows fewer (`max_windows_for`)
MAX_WINDOWS = 32

#: wall-clock seconds one window costs at least (Adam, then a short L-BFGS) on a 2-core CPU
MIN_WINDOW_COST_S = 45.0

#: designs whose reference runs decide the window edges (nominal + Sobol)
PLANNING_DESIGNS = 8

#: designs whose reference runs must all end on a limit cycle for the oscillator recipe
OSCILLATOR_DESIGNS = 5

#: nominal periods the start-up windows cover at least before the limit-cycle window
START_UP_PERIODS = 1.5

#: successive oscillation cycles agreeing within this share of the swing count as the limit cycle
CYCLE_AGREEMENT = 0.02

#: ratio between the Jacobian row scale and the row's actual terms (learned rows) above which rows
#: use both: FeRAM's cell node 177 (its switching current hides behind the access transistor's
#: transconductance), amp's gate 66, ring5's nodes 6
ROW_SCALE_DISAGREEMENT = 100.0


#: spread (largest over smallest, over the planning designs) of some learned row's term size above
#: which each point's rows are also scaled by the size of their own terms there: the half-wave
#: rectifier's diode rows span 100x over its load and amplitude, and a fixed scale let its
#: low-current designs' errors vanish from the loss
POINT_SCALE_SPREAD = 30.0


@dataclass
class Recipe:
    """What the recipe decided for one circuit, and why (one line per decision)."""

    oscillator: bool
    model: dict[str, Any]  # the model variant (`_target_`) and its layout
    training: dict[str, Any]
    reasons: list[str] = field(default_factory=list)

    @property
    def windows(self) -> int:
        """Number of time windows the model starts with."""
        edges = self.model.get("window_edges")
        return int(self.model.get("windows", 1)) if edges is None else len(edges) + 1


def is_time_varying(circuit: Circuit, samples: int = 64) -> bool:
    """Whether any source drives the circuit with a time-varying value (PULSE, PWL, SIN, time in B)."""
    dae = dae_of(circuit)
    bound = dae.bind(None)
    if bound.breakpoints():
        return True
    x = torch.zeros(1, dae.size, dtype=torch.float64)
    with torch.no_grad():
        values = torch.stack([bound.evaluate(x, float(t))[1][0] for t in
                              torch.linspace(0.0, circuit.tstop, samples, dtype=torch.float64)])
    return bool((values - values[0]).abs().max() > 0)


def _reference(circuit: Circuit, P: Tensor, points: int = 2001) -> tuple[Tensor, Tensor]:
    """Reference waveforms (B, T, n_out) of every output on a uniform grid (T,)."""
    grid = torch.linspace(0.0, circuit.tstop, points, dtype=torch.float64)
    with torch.no_grad():
        _, y = simulate_batch(circuit, P, t=grid, rtol=1e-4)
    return grid, y


def _reference_with_steps(circuit: Circuit, P: Tensor, points: int = 2001) -> tuple[Tensor, Tensor, Tensor]:
    """`_reference` and, per design, how many steps the reference solver took up to each grid time
    (T, B): its local-truncation-error control puts its steps where the waveform is hard."""
    from circuits.solve import interpolate

    grid = torch.linspace(0.0, circuit.tstop, points, dtype=torch.float64)
    dae = dae_of(circuit)
    with torch.no_grad():
        res = simulate_tensor(circuit, P, rtol=1e-4)
        cols = [dae.index(o) for o in circuit.outputs]
        y = interpolate(res.t, res.x[..., cols], grid, res.breakpoints, counts=res.counts)
    times = res.t if res.t.dim() == 2 else res.t.unsqueeze(0).expand(P.shape[0], -1)
    counts = res.counts if res.counts is not None else torch.full((P.shape[0],), times.shape[1])
    steps = torch.stack([torch.searchsorted(times[b, :int(counts[b])].contiguous(), grid, right=True)
                         for b in range(P.shape[0])], dim=1).to(torch.float64)
    return grid, y, steps


def activity_edges(t: Tensor, y: Tensor, swings_per_window: float = SWINGS_PER_WINDOW,
                   corners: list[float] | None = None, max_windows: int = MAX_WINDOWS,
                   phases: list[float] | None = None,
                   steps: Tensor | None = None, steps_per_window: float = STEPS_PER_WINDOW) -> list[float]:
    """Inner window edges (s) for waveforms y (B, T, n) on grid t (T,): a new window as soon as some
    design's output has travelled `swings_per_window` of its own peak-to-peak swing since the last
    edge, or (given the reference solver's cumulative step counts `steps` (T, B)) some design's
    solver took `steps_per_window` steps; moved back to a source corner when one lies in the last
    quarter of the window, else to the nearest of `phases` (a periodic drive's quarter periods)
    within a quarter of the window either side; windows hold more where that would give more than
    `max_windows`."""
    swing = (y.amax(dim=1) - y.amin(dim=1)).clamp(min=1e-12)  # (B, n)
    step = y.diff(dim=1).abs() / swing.unsqueeze(1)  # (B, T-1, n)
    travel = torch.cumsum(step.transpose(1, 2).reshape(-1, step.shape[1]).T, dim=0) / swings_per_window
    cum = torch.cat([torch.zeros(1, travel.shape[1], dtype=travel.dtype), travel])  # (T, B·n), in windows
    if steps is not None:
        cum = torch.cat([cum, (steps - steps[:1]) / steps_per_window], dim=1)
    per = 1.0
    while True:
        edges = _edges_every(t, cum, per, sorted(corners or []), sorted(phases or []))
        if len(edges) < max_windows:
            return edges
        per *= 1.05 * (len(edges) + 1) / max_windows


def _edges_every(t: Tensor, cum: Tensor, per: float, corners: list[float], phases: list[float]) -> list[float]:
    """`activity_edges` for one travel `per` window: cum (T, curves) is each curve's travel so far."""
    edges: list[float] = []
    i0 = 0
    while True:
        ahead = (cum[i0:] - cum[i0]).amax(dim=1)  # furthest travel of any curve since the last edge
        over = torch.nonzero(ahead >= per).flatten()
        if not len(over):
            return edges
        i = i0 + int(over[0])
        if float((cum[-1] - cum[i]).amax()) < 0.25 * per:  # the rest is quiet: no short last window
            return edges
        edge, last = float(t[i]), float(t[i0])
        reach = 0.25 * (edge - last)
        near = [c for c in corners if edge - reach <= c < edge]
        in_phase = [c for c in phases if abs(c - edge) <= reach]
        if near or in_phase:
            edge = near[-1] if near else min(in_phase, key=lambda c: abs(c - edge))
            i = int(torch.searchsorted(t, torch.tensor(edge, dtype=t.dtype)))
        if i <= i0:
            return edges
        edges.append(edge)
        i0 = i


def limit_cycle_start(t: Tensor, y: Tensor, agreement: float = CYCLE_AGREEMENT) -> tuple[float, float] | None:
    """(time from which the waveform y (T, n) repeats its last cycle within `agreement` of that cycle's swing,
    period) or None when y does not end on a sustained oscillation (fewer than 3 rising crossings of
    its late mid level, none in the last two periods, or cycles that still change)."""
    from circuits.measure import crossings

    v = y[:, 0]
    half = t.shape[0] // 2
    lo, hi = float(v[half:].min()), float(v[half:].max())
    swing_all = (y.amax(dim=0) - y.amin(dim=0)).clamp(min=1e-12)
    if hi - lo < 0.1 * float(swing_all[0]):
        return None
    rises = crossings(t, v, 0.5 * (lo + hi), "rise")
    if len(rises) < 3:
        return None
    period = float(rises[-1] - rises[-2])
    if float(t[-1] - rises[-1]) > 2 * period:  # the oscillation died out before the end
        return None
    last = rises[-2]
    ref_t = torch.linspace(float(last), float(last) + period, 200, dtype=torch.float64)
    ref = _interp(t, y, ref_t)
    swing_last = torch.maximum(ref.amax(dim=0) - ref.amin(dim=0), 1e-3 * swing_all)  # a decay shows against it

    def gap(start: float) -> float:
        return float(((_interp(t, y, ref_t - float(last) + start) - ref).abs() / swing_last).max())

    if gap(float(rises[-3])) > agreement:  # the oscillation is still growing or drifting at the end
        return None
    start = float(rises[-3])
    for r in reversed(rises[:-3].tolist()):  # walk back while earlier cycles still agree
        if gap(r) > agreement:
            break
        start = r
    return start, period


def _interp(t: Tensor, y: Tensor, at: Tensor) -> Tensor:
    """Linear interpolation of y (T, n) on grid t (T,) at times `at` (M,)."""
    idx = torch.searchsorted(t, at).clamp(1, t.shape[0] - 1)
    w = ((at - t[idx - 1]) / (t[idx] - t[idx - 1])).unsqueeze(1)
    return y[idx - 1] * (1 - w) + y[idx] * w


def _row_scale_kind(circuit: Circuit) -> tuple[str, float]:
    """'mixed' when the Jacobian and the actual terms disagree on some row by over
    ROW_SCALE_DISAGREEMENT, else 'jacobian'; and the largest ratio found."""
    from surrogate.physics import CircuitPhysics

    layout = CircuitPhysics(circuit, row_scale="jacobian").layout
    terms = CircuitPhysics(circuit, row_scale="terms").layout.row_scale
    ratio = float((layout.row_scale / terms)[layout.learned].max())
    return ("mixed" if ratio > ROW_SCALE_DISAGREEMENT else "jacobian"), ratio


def _term_spread(circuit: Circuit, P: Tensor) -> float:
    """Largest ratio, over learned rows, between the designs' (P (B, P)) RMS term sizes."""
    from surrogate.physics import CircuitPhysics

    physics = CircuitPhysics(circuit)
    sizes = []
    with torch.no_grad():
        for design in P:
            res = simulate_tensor(circuit, design.unsqueeze(0), rtol=1e-4)
            sizes.append(physics._term_scale(res.t, res.x[0], design))
    sizes = torch.stack(sizes)[:, physics.layout.learned]  # (B, learned rows)
    if sizes.numel() == 0:
        return 1.0
    top = sizes.amax(dim=0)
    return float((top / sizes.amin(dim=0).clamp(min=1e-9 * float(top.max()))).max())


def max_windows_for(budget_s: float, share: float = 0.5) -> int:
    """Windows a first pass can afford within `share` of a `budget_s` second budget."""
    return int(min(MAX_WINDOWS, max(2, share * budget_s // MIN_WINDOW_COST_S)))


def plan(circuit: Circuit, fixed_params: bool = False, max_windows: int = MAX_WINDOWS) -> Recipe:
    """Decide the surrogate's window layout and model options for `circuit` (see module docstring)."""
    space = circuit.space
    row_scale, ratio = _row_scale_kind(circuit)
    reasons = [f"residual rows: {row_scale} scale (Jacobian/terms ratio up to {ratio:.3g})"]
    point_scale = False
    if space.dim > 0 and not fixed_params:
        spread = _term_spread(circuit, torch.cat([space.nominal_vector().unsqueeze(0),
                                                  space.sample_sobol(PLANNING_DESIGNS - 1, seed=13_579)]))
        point_scale = spread > POINT_SCALE_SPREAD
        reasons.append(f"row terms differ up to {spread:.3g}x between designs: "
                       + ("rows also scaled per point by their own terms" if point_scale else "one scale per row"))
    driven = is_time_varying(circuit)
    nominal = space.nominal_vector().unsqueeze(0)
    if not driven and space.dim > 0 and not fixed_params:
        recipe = _oscillator_plan(circuit, row_scale, reasons, max_windows)
        if recipe is not None:
            recipe.model["point_scale"] = point_scale
            return recipe
        reasons.append("autonomous, but the reference runs do not end on a limit cycle: treated as settling")
    else:
        reasons.append("driven by time-varying sources" if driven else "no time-varying source")
    P = nominal if fixed_params or space.dim == 0 else torch.cat([nominal, space.sample_sobol(
        PLANNING_DESIGNS - 1, seed=24_681, margin=0.0)])
    t, y, steps = _reference_with_steps(circuit, P)
    bound = dae_of(circuit).bind(None)
    # a periodic drive's quarter-period points as candidate edges too: windows a whole number of
    # half periods apart then see the same input, so a later one can start from an earlier one's net
    edges = activity_edges(t, y, corners=bound.breakpoints(), max_windows=max_windows, steps=steps,
                           phases=bound.phase_points())
    reasons.append(f"{len(edges) + 1} window(s): an edge each time an output of {P.shape[0]} reference design(s) "
                   f"has travelled {SWINGS_PER_WINDOW:g} swing(s) or its solver took {STEPS_PER_WINDOW} steps "
                   f"(at most {max_windows} windows), "
                   f"snapped to source corners and quarter periods of SIN sources")
    model = ({"_target_": "surrogate.models.WindowedSurrogate", "window_edges": edges, "state_input": True}
             if edges else {"_target_": "surrogate.models.PlainSurrogate"})
    model.update(row_scale=row_scale, point_scale=point_scale)
    return Recipe(oscillator=False, model=model, training={"start_cover": 4 if edges else 0}, reasons=reasons)


def _oscillator_plan(circuit: Circuit, row_scale: str, reasons: list[str], max_windows: int) -> Recipe | None:
    """Start-up windows over [0, start of the limit cycle] (warped time), then the limit-cycle window;
    None unless the nominal design ends on a limit cycle.

    The cycle's start is the latest over the planning designs that show two full cycles in the
    window, each measured in its own warped time t·s(p) (the time the surrogate's windows live in)."""
    from surrogate.time_scale import TimeScaleError, fit_time_scale, quadratic_features

    space = circuit.space
    P = torch.cat([space.nominal_vector().unsqueeze(0), space.sample_sobol(OSCILLATOR_DESIGNS - 1, seed=24_681)])
    t, y = _reference(circuit, P, points=4001)
    cycles = [limit_cycle_start(t, y[b]) for b in range(P.shape[0])]
    if cycles[0] is None:
        return None
    try:
        coef, _ = fit_time_scale(circuit)
    except TimeScaleError:
        return None
    s = (quadratic_features(space.to_unit(P)) @ coef).exp()
    start = max(float(c[0] * s[b]) for b, c in enumerate(cycles) if c is not None)
    period = cycles[0][1]
    # the limit cycle is distilled from the start-up windows' last period before it: every design
    # must have one full period there, and slower designs (F(p) < 1 in warped time) need more than
    # the nominal one (ring11 from one period: distillation read states before t = 0 and diverged)
    periodic_from = max(start, START_UP_PERIODS * period)
    swing = (y[0].amax(dim=0) - y[0].amin(dim=0)).clamp(min=1e-12)
    travel = (y[0][t <= periodic_from].diff(dim=0).abs() / swing).sum(dim=0).max()  # the busiest output
    startup = min(max_windows - 1, max(1, math.ceil(float(travel) / SWINGS_PER_WINDOW)))
    reasons.append(f"autonomous oscillator: period {period:.4g} s at nominal; cycles agree within "
                   f"{CYCLE_AGREEMENT:.0%} from {start:.4g} s of warped time (latest of "
                   f"{sum(c is not None for c in cycles)} designs with two full cycles) -> "
                   f"{startup} start-up window(s) over [0, {periodic_from:.4g}] s, then one limit-cycle window")
    model = {"_target_": "surrogate.models.LimitCycleSurrogate", "windows": startup + 1,
             "periodic_from": periodic_from, "row_scale": row_scale}
    return Recipe(oscillator=True, model=model, training={"start_cover": 0}, reasons=reasons)
