"""The automatic recipe reads the circuit: oscillators are detected from the circuit's own runs, window
edges follow the waveforms' activity (quiet stretches stay one window) and source corners."""

from __future__ import annotations

import math

import pytest
import torch

from circuits.circuit import load_circuit
from surrogate.recipe import _reference, activity_edges, is_time_varying, limit_cycle_start, plan


def test_sources_that_vary_in_time_are_found_and_a_dc_supply_is_not():
    assert is_time_varying(load_circuit("rc"))      # PULSE
    assert is_time_varying(load_circuit("amp"))     # SIN: no corners, found by evaluating the sources
    assert is_time_varying(load_circuit("feram"))   # PWL
    assert not is_time_varying(load_circuit("ring5"))  # a DC supply only


def test_ring5_nominal_run_ends_on_a_limit_cycle_of_its_measured_period():
    from circuits.measure import period
    from circuits.simulation import simulate_batch

    c = load_circuit("ring5")
    grid = torch.linspace(0.0, c.tstop, 4001, dtype=torch.float64)
    with torch.no_grad():
        _, y = simulate_batch(c, None, t=grid, rtol=1e-5)
    found = limit_cycle_start(grid, y[0])
    assert found is not None
    start, T = found
    assert T == pytest.approx(float(period(grid, y[0, :, 0], k=2)), rel=2e-3)
    assert 0.0 <= start < c.tstop - 2 * T


def test_a_decaying_ringing_is_not_a_limit_cycle():
    t = torch.linspace(0.0, 10.0, 4001, dtype=torch.float64)
    ringing = (torch.exp(-0.4 * t) * torch.sin(2 * math.pi * t)).unsqueeze(1)
    steady = torch.sin(2 * math.pi * t).unsqueeze(1)
    assert limit_cycle_start(t, ringing) is None
    found = limit_cycle_start(t, steady)
    assert found is not None and found[1] == pytest.approx(1.0, rel=1e-3)


def test_quiet_stretches_stay_one_window_and_each_swing_gets_one():
    """A step at t = 2 and a sine of 3 periods in [6, 9]: no edge in the quiet [2.5, 6], one
    window per swing of the sine (2 swings per period), the step's edge on the source corner."""
    t = torch.linspace(0.0, 10.0, 10_001, dtype=torch.float64)
    step = torch.clamp((t - 2.0) / 0.1, 0.0, 1.0)
    sine = torch.where((t > 6) & (t < 9), torch.sin(2 * math.pi * (t - 6)), torch.zeros_like(t))
    y = torch.stack([step, sine], dim=1).unsqueeze(0)
    edges = activity_edges(t, y, corners=[2.1])
    assert not any(2.5 < e < 6.0 for e in edges)
    assert sum(6.0 <= e <= 9.0 for e in edges) == pytest.approx(6, abs=1)
    assert 2.1 in edges


def test_a_sine_drives_edges_onto_its_quarter_periods_and_other_waveforms_give_none():
    """Quarter-period points of SIN(vo va f td θ φ): the source is at a peak, a trough or its offset
    there; none for a damped SIN, one whose frequency is a design parameter, or a PULSE."""
    from circuits.waveforms import phase_points, sine

    args = [0.8, 0.1, 1e9, 0.1e-9, 0.0, 45.0]
    pts = phase_points("sin", args, tstep=1e-12, tstop=2e-9)
    assert pts[0] == pytest.approx(0.225e-9) and len(pts) == 8
    assert all(b - a == pytest.approx(0.25e-9) for a, b in zip(pts, pts[1:]))
    values = sine(torch.tensor(pts, dtype=torch.float64), *args, tstop=2e-9)
    offsets = (values - 0.8).abs()
    assert torch.all((offsets < 1e-12) | ((offsets - 0.1).abs() < 1e-12))
    assert phase_points("sin", [0.8, 0.1, 1e9, 0.0, 1e8], tstep=1e-12, tstop=2e-9) == []
    assert phase_points("sin", [0.8, 0.1, torch.tensor([1e9, 2e9])], tstep=1e-12, tstop=2e-9) == []
    assert phase_points("sin", [0.8, 0.1, 1e9, torch.tensor([0.0, 1e-10])], tstep=1e-12, tstop=2e-9) == []
    assert phase_points("pulse", [0, 1, 0, 1e-10, 1e-10, 1e-9, 2e-9], tstep=1e-12, tstop=4e-9) == []


def test_amps_windows_are_whole_half_periods_of_its_sine_input():
    """amp (SIN 1 GHz): the activity edges move to quarter periods (within a quarter window), so
    windows a period apart see the same input and a later one can start from an earlier one's net."""
    edges = plan(load_circuit("amp")).model["window_edges"]
    assert len(edges) >= 4
    assert all(abs(e / 0.25e-9 - round(e / 0.25e-9)) < 1e-6 for e in edges)
    assert all(b - a == pytest.approx(0.5e-9) for a, b in zip(edges[1:-1], edges[2:-1]))


def test_the_recipe_plans_windows_for_driven_circuits_and_no_limit_cycle():
    rc = plan(load_circuit("rc"))
    assert not rc.oscillator and rc.model["_target_"] != "surrogate.models.LimitCycleSurrogate"
    amp = plan(load_circuit("amp"))
    # v(d) follows a 1 GHz sine for 4 ns: about two swings per period, one window each
    assert not amp.oscillator and 7 <= amp.windows <= 10
    assert amp.model["_target_"] == "surrogate.models.WindowedSurrogate" and amp.model["state_input"]


@pytest.mark.slow
def test_the_recipe_finds_ring5_an_oscillator_and_feram_not():
    ring = plan(load_circuit("ring5"))
    assert ring.oscillator and ring.model["_target_"] == "surrogate.models.LimitCycleSurrogate"
    assert 0 < ring.model["periodic_from"] < load_circuit("ring5").tstop
    # the cycle is distilled from the last period before it: at least 1.5 nominal periods of start-up
    t, y = _reference(load_circuit("ring5"), load_circuit("ring5").space.nominal_vector().unsqueeze(0), points=4001)
    assert ring.model["periodic_from"] >= 1.5 * limit_cycle_start(t, y[0])[1] * (1 - 1e-9)
    feram = plan(load_circuit("feram"))
    assert not feram.oscillator and feram.model["row_scale"] == "mixed"


# ----------------------------------------------------------------------------------------------
# train to a target: the window where the error is made is refined, then split


def _tiny_rc_run(edges: list[float]):
    from tests.surrogate_helpers import build_run

    torch.manual_seed(0)
    return build_run(["circuit=rc", "model=windowed", f"model.window_edges={edges}", "model.width=16",
                      "model.depth=2", "surrogate.lr=1e-2", "surrogate.fixed_params=true",
                      "surrogate.val_points=301", "surrogate.lbfgs_steps=60", "surrogate.lbfgs_designs=1",
                      "surrogate.lbfgs_times=256", "surrogate.designs_per_batch=1", "surrogate.times_per_design=128",
                      "trainer.max_steps=2000"])


def test_the_stalled_window_is_refined_then_split_and_its_error_falls(tmp_path):
    """Window 0 planted as a stall (random weights, never trained); window 1 trained.  With an
    unreachable target the loop works on window 0 first (refine), and splits it when it comes back
    to it; the stalled window's error falls by far, and the split surrogate saves and loads with
    the same waveform."""
    import time

    from surrogate.api import load_surrogate, save_surrogate
    from surrogate.callbacks import TrainToTarget

    module, schedule, _ = _tiny_rc_run([3e-9])
    t, designs, starts = schedule.lbfgs_points(module, 1, seed=3)
    schedule.adam(module, 1, 150, seed=1)
    schedule.optimise(module, 1, (t, designs, starts), steps=60)
    schedule.window_residuals[:] = [float("nan"), float("nan")]
    before, _, _ = module.held_out.window_errors(module.model)
    # a far deadline: the clock is stopped after the first split (40 s ended the loop before the
    # split on a machine at load 4)
    loop = TrainToTarget(target=1e-9, deadline=time.perf_counter() + 600, adam_steps=150)
    real_split = loop._split_and_retrain

    def split_then_stop(module, schedule, k, seed):
        real_split(module, schedule, k, seed)
        loop.deadline = 0.0

    loop._split_and_retrain = split_then_stop
    metrics = loop.run(module, schedule)
    actions = [(r["window"], r["action"]) for r in loop.history]
    assert actions[0] == (0, "refined") and actions[-1] == (0, "split") and len(actions) <= 3
    assert module.model.windows == 3 and float(module.model.edges[1]) == pytest.approx(1.5e-9)
    after, _, _ = module.held_out.window_errors(module.model)
    assert max(after[0], after[1]) < 0.1 * before[0]
    assert metrics["target_met"] is False and len(metrics["target_rounds"]) == len(actions)
    save_surrogate(module.model, tmp_path / "s.pt")
    grid = torch.linspace(0, module.circuit.tstop, 97, dtype=torch.float64)
    with torch.no_grad():
        again = load_surrogate(tmp_path / "s.pt").predict_batch(grid, module.held_out.P)
        now = module.model.predict_batch(grid, module.held_out.P)
    assert torch.allclose(again, now, atol=1e-6)


def test_a_run_that_misses_its_target_exits_3_and_says_so(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "scripts" / "train.py"), "circuit=rc", "recipe=manual",
                           "trainer.max_steps=5", "surrogate.designs_per_batch=2", "surrogate.times_per_design=8",
                           "model.width=8", "model.depth=1", "surrogate.val_designs=2", "surrogate.val_points=21",
                           "trainer.enable_progress_bar=false", "surrogate.target_nrmse=1e-6",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert "TARGET MISSED" in last and "target 1.00e-06" in last
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["target_met"] is False and metrics["nrmse_worst_overall"] > 1e-6
    assert (tmp_path / "surrogate.pt").exists()  # the missed run still leaves its surrogate to inspect


def test_the_loop_works_where_the_error_grows_not_where_it_is_inherited():
    from surrogate.callbacks import TrainToTarget

    loop = TrainToTarget(target=0.01, deadline=0.0, adam_steps=1, target_median=0.003)
    # window 1 makes the error (0.002 -> 0.03), window 2 inherits and adds little
    errors = torch.tensor([0.002, 0.03, 0.035, 0.02])
    assert loop.culprit(errors, torch.zeros(4)) == 1
    # every worst error within the target: the median decides
    assert loop.culprit(torch.full((3,), 0.005), torch.tensor([0.001, 0.004, 0.002])) == 1


def test_a_smaller_budget_places_fewer_windows_each_spanning_more_swings():
    t = torch.linspace(0.0, 20.0, 20_001, dtype=torch.float64)
    y = torch.sin(2 * math.pi * t).reshape(1, -1, 1)  # 20 periods: about 40 swings
    assert 24 <= len(activity_edges(t, y)) + 1 <= 32  # capped at MAX_WINDOWS, not 40
    few = activity_edges(t, y, max_windows=8)
    assert 4 <= len(few) + 1 <= 8
    gaps = torch.diff(torch.tensor([0.0, *few, 20.0]))
    assert float(gaps.max()) < 2.5 * float(gaps.min())  # still evenly spread


def test_where_the_reference_solver_needs_many_steps_the_windows_are_short():
    """A flat waveform (no swing to travel) whose solver steps crowd into [4, 5]: the edges crowd there."""
    t = torch.linspace(0.0, 10.0, 1001, dtype=torch.float64)
    y = torch.zeros(1, 1001, 1, dtype=torch.float64)
    step_times = torch.cat([torch.linspace(0.0, 10.0, 21), torch.linspace(4.0, 5.0, 200)]).sort().values
    steps = torch.searchsorted(step_times, t, right=True).to(torch.float64).unsqueeze(1)
    edges = activity_edges(t, y, steps=steps, steps_per_window=40)
    inside = [e for e in edges if 4.0 <= e <= 5.1]
    assert len(inside) >= 4 and len(edges) - len(inside) <= 1


def _held_out(worst: float, median: float) -> dict:
    """Overall held-out metrics as `HeldOut.evaluate` reports them (9 designs)."""
    return {"nrmse_worst_overall": worst, "nrmse_median_overall": median, "designs": 9}


def _scripted_loop(script: list, edges: tuple = (0.0, 1.0, 2.0), held_out: dict | None = None,
                   retrained_with=lambda k: [], trained: list | None = None, trainer=None, **loop_kwargs):
    """(loop, module, its metrics, the first networks) of `TrainToTarget.run` on a stand-in model
    with windows between `edges` whose successive held-out evaluations are `script`'s (per-window
    worst, per-window median, overall) entries; `held_out`: more attributes of the held-out stand-in;
    `retrained_with`: the model's; `trainer`: the module's (its `received_sigterm`); target 0.01, median 0.003, a minute of budget, rounds that retrain
    nothing (the windows they would retrain are appended to `trained`)."""
    import time
    from types import SimpleNamespace

    from torch import nn

    from surrogate.callbacks import TrainToTarget

    calls = iter(script)
    edges = torch.tensor(edges, dtype=torch.float64)
    windows = len(edges) - 1

    def warp_grid(t, P):  # plain time; each point's window
        win = (torch.searchsorted(edges, t, right=True) - 1).clamp(0, windows - 1)
        return t, torch.ones_like(t), win.expand(P.shape[0], -1)

    model = SimpleNamespace(nets=nn.ModuleList([nn.Linear(1, 1) for _ in range(windows)]), edges=edges,
                            windows=windows, can_split=lambda k: False, warp_grid=warp_grid,
                            retrained_with=retrained_with, cost_weight=lambda k: 1.0)
    first = model.nets
    module = SimpleNamespace(model=model, hparams=SimpleNamespace(seed=0), _trainer=trainer,
                             held_out=SimpleNamespace(window_errors=lambda model: next(calls), **(held_out or {})))
    schedule = SimpleNamespace(window_residuals=[0.0] * windows, lbfgs_seconds=0.0,
                               lbfgs_points=lambda module, k, seed: k,
                               optimise=lambda module, k, points: (trained if trained is not None else []).append(k) or [1.0])
    loop = TrainToTarget(target=0.01, deadline=time.perf_counter() + 60, adam_steps=1, target_median=0.003,
                         **loop_kwargs)
    return loop, module, loop.run(module, schedule), first


def test_the_loop_undoes_a_worse_round_gives_up_on_a_window_and_ends_with_the_best_state(monkeypatch):
    """Scripted held-out errors: round 1 improves window 1 but the whole gets worse (kept: judged on
    its window), round 2 leaves window 1 worse (undone), round 3 too (undone: window 1 is given up),
    then nothing is left to work on; the run ends with the best state seen, the first one."""
    script = [  # (per-window worst, per-window median, overall)
        (torch.tensor([0.002, 0.05]), torch.tensor([0.001, 0.02]), _held_out(0.05, 0.02)),
        (torch.tensor([0.002, 0.04]), torch.tensor([0.001, 0.015]), _held_out(0.06, 0.025)),
        (torch.tensor([0.002, 0.07]), torch.tensor([0.001, 0.03]), _held_out(0.07, 0.03)),
        (torch.tensor([0.002, 0.08]), torch.tensor([0.001, 0.03]), _held_out(0.08, 0.03)),
    ]
    loop, module, out, first = _scripted_loop(script)
    assert [r["action"] for r in loop.history] == ["refined", "refined, undone", "refined, undone"]
    assert [r["window"] for r in loop.history] == [1, 1, 1]
    assert out["nrmse_worst_overall"] == 0.05 and out["target_met"] is False
    assert module.model.nets is not first and len(module.model.nets) == 2  # the first state's copy is back


def test_a_limit_cycle_is_retrained_after_its_start_up_window_and_the_round_judged_on_the_whole():
    """Scripted, windows 0-1 start-up and 2 the cycle (retrained with either): round 1 on window 1 improves
    it but the whole gets worse: undone, though its window improved (the plain rule keeps such a
    round); round 2 on window 1 again meets the target: kept, and the loop ends.  Each round
    retrained window 1, then window 2."""
    script = [  # (per-window worst, per-window median, overall)
        (torch.tensor([0.002, 0.05, 0.05]), torch.tensor([0.001, 0.02, 0.02]), _held_out(0.05, 0.02)),
        (torch.tensor([0.002, 0.04, 0.06]), torch.tensor([0.001, 0.015, 0.025]), _held_out(0.06, 0.025)),
        (torch.tensor([0.002, 0.008, 0.009]), torch.tensor([0.001, 0.002, 0.002]), _held_out(0.009, 0.002)),
    ]
    trained: list[int] = []
    loop, _, out, _ = _scripted_loop(script, edges=(0.0, 1.0, 2.0, 3.0), trained=trained, aim=1.0,
                                     retrained_with=lambda k: [2] if k < 2 else [])
    assert [(r["window"], r["action"]) for r in loop.history] == [
        (1, "refined (then window 2), undone"), (1, "refined (then window 2)")]
    assert trained == [1, 2, 1, 2]
    assert out["nrmse_worst_overall"] == 0.009 and out["target_met"] is True


def test_a_met_target_is_refined_towards_its_aim_while_time_is_left():
    """Scripted held-out errors: the first state meets the target (worst 0.009 <= 0.01) but not the
    aim (0.8 x 0.01); the loop refines window 1 and stops at the aim, target met.  With aim 1 it
    stops at once."""
    script = [(torch.tensor([0.002, 0.009]), torch.tensor([0.001, 0.002]), _held_out(0.009, 0.002)),
              (torch.tensor([0.002, 0.006]), torch.tensor([0.001, 0.002]), _held_out(0.006, 0.002))]
    loop, _, out, _ = _scripted_loop(script, aim=0.8)
    assert [(r["window"], r["action"]) for r in loop.history] == [(1, "refined")]
    assert out["nrmse_worst_overall"] == 0.006 and out["target_met"] is True
    loop, _, out, _ = _scripted_loop(script, aim=1.0)
    assert loop.history == [] and out["nrmse_worst_overall"] == 0.009 and out["target_met"] is True


@pytest.mark.slow
def test_a_long_ring_ends_on_a_limit_cycle_within_its_generated_window():
    """ring11's period is about twice ring5's: its generated window (8.8 ns) still ends on a limit cycle,
    which the recipe needs to see to treat it as an oscillator (in ring5's 4 ns it does not)."""
    from circuits.circuit import circuit_from_config

    ring = circuit_from_config({"name": "ring", "generator": "ring", "stages": 11, "params": {
        "cload": {"low": 8e-15, "high": 16e-15, "nominal": 10e-15}, "wn": {"low": 0.8e-6, "high": 1.6e-6, "nominal": 1e-6},
        "wp": {"low": 1.6e-6, "high": 3.2e-6, "nominal": 2e-6}}})
    t, y = _reference(ring, ring.space.nominal_vector().unsqueeze(0), points=4001)
    found = limit_cycle_start(t, y[0])
    assert found is not None and found[0] < 0.5 * ring.tstop


def test_a_headline_off_target_is_worked_on_in_a_window_its_measurement_reads():
    """Scripted: the NRMSE meets its targets but the headline (worst 3 % against 1 %) does not.  The
    worst-measured design's error grew most in window 0 (which the measurement, over 1.5-3 s, does
    not read) and, of the windows it reads, in window 2: the round is on window 2, for the headline;
    the next evaluation meets every target and the loop ends there."""
    from types import SimpleNamespace

    def metrics(headline_worst):
        return {**_held_out(0.004, 0.001), "headline": "gain", "headline_target": 0.01,
                "headline_err_worst": headline_worst, "headline_worst_design_index": 1}

    windows = (torch.tensor([0.004, 0.001, 0.003]), torch.tensor([0.001, 0.001, 0.001]))
    script = [(*windows, metrics(0.03)), (*windows, metrics(0.005))]
    per_design = torch.tensor([[0.001, 0.001, 0.001], [0.004, 0.001, 0.003]])  # (designs, windows)
    held_out = {"t": torch.linspace(0.0, 3.0, 31, dtype=torch.float64), "P": torch.zeros(2, 1),
                "design_window_errors": lambda model: per_design,
                "headline": SimpleNamespace(measurement=SimpleNamespace(window=(1.5, 3.0)))}
    loop, _, out, _ = _scripted_loop(script, edges=(0.0, 1.0, 2.0, 3.0), held_out=held_out, aim=1.0)
    assert [(r["window"], r["for"], r["action"]) for r in loop.history] == [(2, "headline", "refined")]
    assert out["target_met"] is True and out["headline_err_worst"] == 0.005
    # the same errors with the headline met: nothing to do
    loop, _, out, _ = _scripted_loop([(*windows, metrics(0.005))], edges=(0.0, 1.0, 2.0, 3.0),
                                     held_out=held_out, aim=1.0)
    assert loop.history == [] and out["target_met"] is True


def test_a_headline_over_its_target_means_the_target_is_missed():
    """The verdict counts the headline: NRMSE within its targets, gain error 2 % against 1 %, no
    budget left for a round: target missed."""
    import time
    from types import SimpleNamespace

    from surrogate.callbacks import TrainToTarget

    loop = TrainToTarget(target=0.01, target_median=0.003, deadline=time.perf_counter() - 1)
    metrics = {**_held_out(0.004, 0.001), "headline": "gain", "headline_target": 0.01, "headline_err_worst": 0.02}
    held_out = SimpleNamespace(window_errors=lambda model: (torch.zeros(1), torch.zeros(1), dict(metrics)))
    module = SimpleNamespace(model=SimpleNamespace(nets=[], edges=torch.tensor([0.0, 1.0]), windows=1,
                                                   retrained_with=lambda k: [], cost_weight=lambda k: 1.0),
                             held_out=held_out, hparams=SimpleNamespace(seed=0))
    out = loop.run(module, SimpleNamespace(window_residuals=[0.0], lbfgs_seconds=1.0))
    assert out["target_met"] is False


def test_the_target_loop_stops_at_once_when_the_run_was_sent_sigterm():
    """A SIGTERM'd run does not start another round (Lightning would only look after the loop)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from types import SimpleNamespace

    script = [(torch.tensor([0.002, 0.05]), torch.tensor([0.001, 0.02]), _held_out(0.05, 0.02))] * 3
    with pytest.raises(SIGTERMException):
        _scripted_loop(script, trainer=SimpleNamespace(received_sigterm=True))
    met = (torch.tensor([0.002, 0.005]), torch.tensor([0.001, 0.002]), _held_out(0.005, 0.002))
    loop, *_ = _scripted_loop([script[0], met], trainer=SimpleNamespace(received_sigterm=False), aim=1.0)
    assert [r["action"] for r in loop.history] == ["refined"]
