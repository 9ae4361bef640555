"""Resistors as ngspice-39 reads them: value, model geometry (rsh, narrow, short, defw, l, res),
m, scale, r=/resistance=, tc= pairs and a zero value (res/restemp.c, resparam.c, inp2r.c)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from circuits import simulate
from circuits.netlist import parse_netlist
from circuits.ngspice import ngspice_available
from scripts.compat_corpus import run_deck
from tests.netlist_helpers import assert_rejected, parse_body
from tests.test_netlist_compat import load_circuit_from_text

DECK = Path(__file__).parent / "data" / "resistor_forms.cir"

# resistance seen by each divider node of resistor_forms.cir, R scale / m by restemp.c's formula
EXPECTED_OHMS = {
    "n1": 10e3 / 2,                          # m=2
    "n2": 10 * 1e3,                          # scale=1k
    "n3": math.inf,                          # (11u) / (2u - 2 * 1u) * 1000: open
    "n4": 7e3,                               # the model's res
    "n5": (5e-6 - 2e-6) / 2e-6 * 100,        # l given, w from the model's w (defw)
    "n6": 10e-6 / (10e-6 - 2e-6) * 1000,     # ressetup.c's 10u defaults for l and w
    "n7": 2e3 * 3 / 4,                       # the value wins over the geometry; scale=3 m=4
    "n8": 3e3,                               # r=
    "n9": 5e3,                               # resistance=, tc= pair (no effect at 27 C)
    "n10": 9e3 / 3,                          # rsh=0: the model's r; m=3
    "n11": 2e-6 / 3e-6 * 50,                 # geometry; r=1m is below resmpar.c's floor anyway
}


def test_divider_voltages_are_restemp_resistances():
    """At the sine's peak each node is R/(1k + R) of the source (analytic, no ngspice)."""
    text = DECK.read_text().replace("SIN(0 1 1k)", "DC 1")
    circuit = load_circuit_from_text(text)
    out = simulate(circuit, t=torch.tensor([0.0, 1e-3], dtype=torch.float64))
    for node, ohms in EXPECTED_OHMS.items():
        want = 1.0 if math.isinf(ohms) else ohms / (1e3 + ohms)
        assert out[f"v({node})"].iloc[-1] == pytest.approx(want, rel=1e-9), node


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
@pytest.mark.parametrize("deck", [DECK, Path(__file__).parent / "data" / "corpus" / "ng_res_array.cir"])
def test_resistor_forms_match_ngspice_as_written(deck):
    result = run_deck(deck, check_reference=False)
    assert result.status == "match", (result.status, result.nrmse, result.reason)


def test_zero_resistance_is_one_milliohm():
    circuit = load_circuit_from_text("t\nV1 a 0 1\nR0 a b 0\nR1 b 0 1\n.tran 1u 10u\n")
    out = simulate(circuit, t=torch.tensor([0.0], dtype=torch.float64))
    assert out["v(b)"].iloc[0] == pytest.approx(1 / 1.001, rel=1e-12)


def test_a_word_is_a_model_only_when_a_model_has_that_name():
    nl = parse_netlist("t\n.param rv=2k\nR1 a 0 rv\nR2 a 0 rm\n.model rm r rsh=10\n.tran 1n 10n\n")
    r1, r2 = nl.element("r1"), nl.element("r2")
    assert (r1.model, r1.value.text) == (None, "rv")
    assert (r2.model, r2.value) == ("rm", None)


def test_inert_resistor_parameters_are_listed_as_ignored():
    nl = parse_body("R1 a 0 1k tc=1e-3 2e-4 ac=5\n")
    assert nl.element("r1").params.keys() == {"tc1", "tc2", "ac"}
    assert any(i.startswith("r1 tc2= (no effect at 27 C)") for i in nl.ignored)


@pytest.mark.parametrize("body,line,what", [
    ("R1 a 0 1k l=2u\n", 2, "unknown parameter 'l' for r1"),
    ("R1 a 0 1k temp=50\n", 2, "parameter 'temp' is not supported"),
    ("R1 a 0 1k r=2k\n", 2, "value given twice"),
    ("R1 a 0\n", 2, "r1: missing value"),
    ("R1 a 0 rm\n.model rm r tnom=50\n", 3, "parameter 'tnom' is not supported"),
    ("R1 a 0 1k\n.options scale=1u\n", 3, ".options scale=1u is not supported"),
])
def test_resistor_settings_not_modelled_are_one_line_errors(body, line, what):
    assert_rejected(body, line, what)
