"""Monte Carlo yield (optimize/montecarlo.py, scripts/yield.py) against independent truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optimize.montecarlo import draw_designs, monte_carlo_yield, passes, wilson_interval
from optimize.tasks import load_task

ROOT = Path(__file__).resolve().parent.parent


def test_wilson_interval_matches_textbook_values():
    # Wilson score 95 % intervals (z = 1.96): 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_draws_have_the_asked_relative_sigma_and_are_truncated_to_the_box():
    task = load_task("rc_delay")
    space = task.space
    centre = space.vector({"r": 1e3, "c": 1e-12})
    P, outside = draw_designs(task, centre, {"r": 0.05}, 20_000, seed=1)
    rel = P[:, 0] / 1e3 - 1
    assert float(rel.std()) == pytest.approx(0.05, rel=0.03) and abs(float(rel.mean())) < 2e-3
    assert bool((P[:, 1] == 1e-12).all())  # not varied: at the centre
    lo, hi = space.bounds()
    at_low = space.vector({"r": float(lo[0]), "c": 1e-12})  # half of the draws of r fall below the box
    P, outside = draw_designs(task, at_low, {"r": 0.05}, 4000, seed=2)
    assert outside == pytest.approx(0.5, abs=0.03) and bool((P[:, 0] >= lo[0]).all())


def test_rc_delay_yield_on_the_surrogate_agrees_with_the_reference_solver_on_the_same_designs():
    from optimize.evaluators import ReferenceEvaluator, SurrogateEvaluator
    from surrogate.api import load_surrogate

    task = load_task("rc_delay", target=0.7e-9, tolerance=0.05)
    centre = task.space.vector({"r": 1e3, "c": 1e-12})
    surrogate = SurrogateEvaluator(load_surrogate(ROOT / "pretrained" / "rc.pt"))
    result = monte_carlo_yield(task, surrogate, centre, {"r": 0.04, "c": 0.04}, 300, seed=3)
    with torch.no_grad():
        ref = ReferenceEvaluator(task.circuit).measure(result.designs, [task.objective.measurement])[:, 0]
    ref_pass = passes(ref, task.target, task.tolerance)
    assert 0.2 < float(ref_pass.double().mean()) < 0.9  # a yield that can be wrong either way
    assert float((ref_pass == result.passed).double().mean()) >= 0.95
    lo, hi = wilson_interval(int(result.passed.sum()), 300)
    rlo, rhi = wilson_interval(int(ref_pass.sum()), 300)
    assert lo <= rhi and rlo <= hi  # the two 95 % intervals overlap


def test_yield_script_writes_its_report_and_rejects_a_bad_variation_in_one_line(tmp_path):
    base = [sys.executable, str(ROOT / "scripts" / "yield.py"), "task=rc_delay", "task.target=0.7e-9",
            "task.tolerance=0.05", "samples=200", "variation.r=0.04", "progress=false"]
    proc = subprocess.run(base + [f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "yield.json").read_text())
    assert report["samples"] == 200 and 0 <= report["yield"] <= 1 and report["variation"] == {"r": 0.04}
    lo, hi = report["yield_95"]
    assert lo <= report["yield"] <= hi and (tmp_path / "yield.png").stat().st_size > 0
    assert proc.stdout.strip().splitlines()[-2].startswith("rc_delay: yield")
    bad = subprocess.run(base[:-2] + ["variation.rr=0.04", f"hydra.run.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "variation.rr: not a design parameter" in bad.stderr + bad.stdout


def test_a_limit_cycle_frequency_read_off_the_cycle_equals_the_sampled_measurement():
    """ring5's frequency from the cycle's learned F(p) (designs whose measured periods lie on the
    cycle) equals the crossing-based measurement of its sampled waveform, and keeps its gradient."""
    from optimize.evaluators import SurrogateEvaluator
    from surrogate.api import load_surrogate

    task = load_task("ring5_freq")
    evaluator = SurrogateEvaluator(load_surrogate(ROOT / "pretrained" / "ring5.pt"), points=201)
    meas = task.objective.measurement
    P = task.space.sample_uniform(16, torch.Generator().manual_seed(5))
    hz, crossed, begins = evaluator.surrogate.cycle_frequency(P, meas.signal, meas.level)
    on_cycle = crossed & (meas.window[1] - 2 / hz.detach() >= begins)
    assert 4 <= int(on_cycle.sum()) < 16  # both kinds of design in the batch
    with torch.no_grad():
        fast, sampled = evaluator._one(P, meas), evaluator._sampled(P, meas)
    assert float(((fast - sampled) / sampled).abs().max()) < 1e-9
    Pg = P[on_cycle][:2].clone().requires_grad_(True)
    evaluator._one(Pg, meas).sum().backward()
    assert bool(torch.isfinite(Pg.grad).all()) and float(Pg.grad.abs().max()) > 0
