"""The simulate entry point: outputs written, user errors reported in one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from circuits.ngspice import ngspice_available

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_simulate_writes_waveforms_metrics_and_plot(tmp_path):
    proc = run("circuit=rc", "params.r=1500", f"hydra.run.dir={tmp_path}/out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"]["r"] == 1500 and metrics["nrmse"]["worst"] < 1e-3
    table = pd.read_parquet(out / "waveforms.parquet")
    assert set(table.engine) == {"reference", "ngspice"}
    assert (out / "waveforms.png").stat().st_size > 1000


def test_raw_netlist_and_user_errors(tmp_path):
    bad = tmp_path / "bad.cir"
    bad.write_text("title\nR1 a 0 1k\nQ1 a b c npn\n.tran 1n 10n\n.end\n")
    proc = run(f"netlist={bad}", "ngspice=false", f"hydra.run.dir={tmp_path}/o1", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "bad.cir:3" in proc.stderr
    proc = run("circuit=rc", "params.r=1e9", "ngspice=false", f"hydra.run.dir={tmp_path}/o2", cwd=tmp_path)
    assert proc.returncode == 2 and "outside its range" in proc.stderr
    proc = run("circuit=nosuch", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_train_unknown_circuit_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "circuit=nosuch"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nosuch" in proc.stderr
