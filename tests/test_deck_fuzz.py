"""Mutated real decks through load_circuit and a short simulate: success or a one-line NeuroSpiceError that
names the deck, never another exception (tests/deck_fuzz.py; scripts/fuzz_netlists.py prints the table)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import circuits
from circuits.errors import ConvergenceError
from tests.deck_fuzz import FAILURES, Mutant, mutants, run_mutant, seed_decks

_DIR = Path(tempfile.mkdtemp(prefix="deck_fuzz_"))


def check(mutant: Mutant, max_steps: int, seconds: float) -> None:
    """The mutant loads and runs, or stops with a one-line user error naming its file (or its time limit)."""
    logging.disable(logging.WARNING)  # parser notes about ignored cards
    try:
        outcome = run_mutant(mutant, _DIR, max_steps=max_steps, seconds=seconds)
    finally:
        logging.disable(logging.NOTSET)
    assert outcome.kind not in FAILURES, (mutant.seed, mutant.edits, outcome.kind, outcome.message)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutants(seed_decks(quick=True)))
def test_mutated_quick_decks_run_or_fail_in_one_line(mutant: Mutant) -> None:
    check(mutant, max_steps=20, seconds=2.0)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutants(seed_decks()))
def test_mutated_decks_run_or_fail_in_one_line(mutant: Mutant) -> None:
    check(mutant, max_steps=200, seconds=5.0)


@pytest.mark.parametrize("error, kind", [(ValueError("boom"), "crash"),
                                         (ConvergenceError("no deck named"), "bad message"), (None, "ok")])
def test_the_fuzzer_tells_a_crash_and_an_unnamed_error_from_success(monkeypatch, error, kind) -> None:
    def fake(_circuit):
        if error is not None:
            raise error

    monkeypatch.setattr(circuits, "simulate", fake)
    rc = seed_decks(quick=True)["rc"].encode()
    assert run_mutant(Mutant("rc", (), rc), _DIR).kind == kind
