"""scripts/optimize.py and run_optimize: result.json schema, out-of-range targets, one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from circuits.errors import ConfigError
from circuits.ngspice import ngspice_available
from optimize.evaluators import NgspiceEvaluator, ReferenceEvaluator
from optimize.run import format_result, run_optimize
from optimize.tasks import known_tasks, load_task

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
needs_rc = pytest.mark.skipif(not (ROOT / "pretrained" / "rc.pt").is_file(), reason="pretrained/rc.pt missing")
SMALL = ["progress=false", "gradient.prescreen=64", "gradient.starts=4", "gradient.adam_steps=100"]
SCHEMA = {"task", "method", "params", "predicted", "verified", "simulator_calls", "wall_time_s"}


def script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "optimize.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="optimize", overrides=list(overrides))


@needs_rc
def test_script_writes_result_json_with_the_schema(tmp_path):
    out = tmp_path / "res" / "result.json"
    proc = script("task=rc_delay", "task.target=1.2e-9", f"output={out}", f"hydra.run.dir={tmp_path}/run",
                  f"verify.ngspice={str(ngspice_available()).lower()}", *SMALL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert SCHEMA <= set(r)
    assert r["task"] == "rc_delay" and r["method"] == "gradient"
    assert set(r["params"]) == {"r", "c"} and all(isinstance(v, float) for v in r["params"].values())
    assert set(r["verified"]) == {"reference", "ngspice"}
    assert {"value", "objective", "rel_error"} <= set(r["predicted"])
    ref = r["verified"]["reference"]
    assert ref["status"] == "ok" and abs(ref["rel_error"]) <= 0.01 and r["in_range"]
    # the verified value is the reference solver's own measurement of the reported design
    task = load_task("rc_delay", target=1.2e-9)
    P = task.space.vector(r["params"]).unsqueeze(0)
    with torch.no_grad():
        truth = float(ReferenceEvaluator(task.circuit).measure(P, [task.objective.measurement])[0, 0])
    assert ref["value"] == pytest.approx(truth, rel=1e-9)
    if ngspice_available():
        assert abs(r["verified"]["ngspice"]["rel_error"]) <= 0.01
    else:
        assert r["verified"]["ngspice"]["status"] == "skipped"
    assert "rc_delay" in proc.stdout and "reference" in proc.stdout


@needs_rc
def test_out_of_range_target_is_reported(tmp_path, capsys):
    """A delay beyond the box's slowest corner: flagged, closest achievable = that corner, both bounds active."""
    cfg = config("task=rc_delay", "task.target=5e-9", "verify.ngspice=false", *SMALL)
    r = run_optimize(cfg, tmp_path)
    assert r["in_range"] is False
    assert r["active_bounds"] == {"r": "high", "c": "high"}
    task = load_task("rc_delay")
    corner = task.space.vector({"r": 2000.0, "c": 2e-12}).unsqueeze(0)
    with torch.no_grad():
        slowest = float(ReferenceEvaluator(task.circuit).measure(corner, [task.objective.measurement])[0, 0])
    assert r["closest_achievable"] == pytest.approx(slowest, rel=1e-3)
    assert r["range"][1] >= slowest * (1 - 1e-6) and r["range"][1] < 5e-9
    text = format_result(r)
    assert "OUT OF RANGE" in text and "r at its high bound" in text
    assert json.loads((tmp_path / "result.json").read_text())["in_range"] is False


def test_optuna_on_reference_via_run_optimize(tmp_path):
    cfg = config("task=rc_delay", "method=optuna", "simulator=reference", "optuna.n_trials=40",
                 "verify.ngspice=false", "range.samples=0", "progress=false")
    r = run_optimize(cfg, tmp_path)
    assert r["method"] == "optuna-reference" and 1 <= r["simulator_calls"] <= 40
    assert (tmp_path / "optuna.db").is_file()                # default storage: SQLite in the run dir
    assert r["verified"]["reference"]["value"] == pytest.approx(r["predicted"]["value"], rel=1e-9)


def test_unknown_task_and_parameter_are_one_line_errors(tmp_path):
    for args, needle in ((["task=nosuch"], "unknown task 'nosuch'"),
                         (["task=rc_delay", "task.free=[r,nosuch]"], "nosuch"),
                         (["task=rc_delay", "task.fixed.bogus=1"], "bogus")):
        proc = script(*args, f"hydra.run.dir={tmp_path}/o", cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip().count("\n") == 0 and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_unknown_method_and_simulator_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="simplex"):
        run_optimize(config("task=rc_delay", "method=simplex"), tmp_path)
    with pytest.raises(ConfigError, match="xyce"):
        run_optimize(config("task=rc_delay", "method=optuna", "simulator=xyce"), tmp_path)


def test_missing_surrogate_says_how_to_make_it(tmp_path, monkeypatch):
    import optimize.run

    monkeypatch.setattr(optimize.run, "default_surrogate_path", lambda circuit: tmp_path / f"{circuit}.pt")
    with pytest.raises(ConfigError, match=r"scripts/train_all.sh rc") as exc:
        run_optimize(config("task=rc_delay", "progress=false"), tmp_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="surrogate="):
        run_optimize(config("task=rc_delay", f"surrogate={tmp_path}/none.pt"), tmp_path)


@pytest.mark.parametrize("name", known_tasks())
def test_task_configs_compose_and_build(name):
    cfg = config(f"task={name}")
    task = load_task(name)
    assert cfg.task.name == name == task.name
    assert task.free and task.objective.target != 0 and task.tolerance > 0


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_ngspice_and_reference_measure_the_same_delay():
    task = load_task("rc_delay")
    P = task.space.sample_sobol(3, seed=3)
    meas = [task.objective.measurement]
    with torch.no_grad():
        a = ReferenceEvaluator(task.circuit).measure(P, meas)
    b = NgspiceEvaluator(task.circuit).measure(P, meas)
    assert torch.allclose(a, b, rtol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", known_tasks())
def test_default_targets_are_reachable_from_nominal_measurements(name):
    """Each task's measurement exists at the nominal design (reference solver)."""
    task = load_task(name)
    P = task.base_vector().unsqueeze(0)
    with torch.no_grad():
        m = float(ReferenceEvaluator(task.circuit).measure(P, [task.objective.measurement])[0, 0])
    assert m == m and m > 0
