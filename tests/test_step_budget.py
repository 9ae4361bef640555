"""Long transients: the step budget (solver.max_steps) stops them in one line naming the deck, before any
work when the window alone needs too many steps, and a slow run shows a progress bar."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import circuits
from circuits import result
from circuits.errors import ConvergenceError
from circuits.result import DEFAULT_MAX_STEPS, step_budget

RC_TAIL = "R1 in out 1k\nC1 out 0 1p\n"


def deck(tmp_path: Path, name: str, source: str, tran: str) -> Path:
    """A one-source RC deck written to tmp_path/name."""
    path = tmp_path / name
    path.write_text(f"{name}\n{source}\n{RC_TAIL}{tran}\n.end\n")
    return path


def pwl_deck(tmp_path: Path, points: int) -> Path:
    """An RC driven by a square wave of ``points`` PWL points 1 ns apart, over the whole PWL."""
    pairs = " ".join(f"{k}n {k % 2}" for k in range(points))
    return deck(tmp_path, "pwl_long.cir", f"V1 in 0 PWL({pairs})", f".tran 1n {points}n")


def stopped(path: Path, max_steps: int) -> tuple[str, float]:
    """The one-line ConvergenceError of simulating ``path`` within ``max_steps`` and the seconds it took."""
    circuit = circuits.load_circuit(path)
    start = time.perf_counter()
    with step_budget(max_steps, progress=False), pytest.raises(ConvergenceError) as info:
        circuits.simulate(circuit)
    return str(info.value), time.perf_counter() - start


def test_a_window_too_long_for_its_step_ceiling_stops_before_the_first_step(tmp_path: Path) -> None:
    # .tran 1p 1e3: ngspice's ceiling (tstep) asks 1e15 steps; it ran without an end before
    message, seconds = stopped(deck(tmp_path, "long_dc.cir", "V1 in 0 DC 1", ".tran 1p 1e3"), DEFAULT_MAX_STEPS)
    assert message.startswith(f"{tmp_path / 'long_dc.cir'}: the step ceiling 1e-12 s needs 1e+15 steps")
    assert "raise solver.max_steps" in message and "\n" not in message
    assert seconds < 5


def test_a_pulse_with_too_many_corners_names_the_deck(tmp_path: Path) -> None:
    path = deck(tmp_path, "long_pulse.cir", "V1 in 0 PULSE(0 1 0 10p 10p 4n 10n)", ".tran 1 1e3")
    message, seconds = stopped(path, DEFAULT_MAX_STEPS)
    assert message.startswith(f"{path}: a PULSE source: 4e+11 corners") and "raise solver.max_steps" in message
    assert seconds < 5


def test_a_20000_point_pwl_over_the_budget_stops_before_the_first_step(tmp_path: Path) -> None:
    message, seconds = stopped(pwl_deck(tmp_path, 20_000), 1000)
    assert message.startswith(f"{tmp_path / 'pwl_long.cir'}: ") and "solver.max_steps=1000" in message
    assert seconds < 5


def test_the_budget_counts_every_step_of_a_run_ahead_block(tmp_path: Path) -> None:
    # a linear deck at its step ceiling takes its steps in run-ahead blocks (one update each): its 2025
    # steps (2000 at the ceiling, 25 to reach it) under a 2000-step budget must stop, not pass as a
    # handful of blocks
    path = deck(tmp_path, "sine.cir", "V1 in 0 SIN(0 1 1meg)", ".tran 1n 2u")
    message, _ = stopped(path, 2000)
    assert f"{path}: transient stopped after solver.max_steps=2000 steps" in message


def test_the_budget_holds_for_a_batch_of_designs_with_their_own_steps() -> None:
    rc = circuits.load_circuit("rc")
    with step_budget(60, progress=False), pytest.raises(ConvergenceError, match=r"rc\.yaml.*solver\.max_steps=60"):
        circuits.simulate_batch(rc, [{"r": 600.0}, {"r": 1800.0}])


def test_a_slow_run_shows_a_progress_bar(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(result, "PROGRESS_AFTER_S", 0.0)
    with step_budget(DEFAULT_MAX_STEPS, progress=True):
        frame = circuits.simulate(circuits.load_circuit(pwl_deck(tmp_path, 20)))
    assert frame["time"].iloc[-1] == pytest.approx(20e-9)
    assert "transient:" in capsys.readouterr().err
