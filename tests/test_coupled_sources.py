"""K (coupled inductors), F and H (current-controlled sources): netlist forms, errors, and ngspice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.errors import NetlistError
from circuits.measure import compare
from circuits.netlist import parse_netlist
from circuits.ngspice import ngspice_available

DATA = Path(__file__).parent / "data"


def _parse(body: str):
    return parse_netlist("title\n" + body + ".tran 1n 10n\n")


def test_forms_and_subcircuit_references() -> None:
    """K reads two inductors, F/H one V source; inside a subcircuit the names are the instance's."""
    nl = _parse(".subckt t a b\nl1 a 0 1u\nl2 b 0 4u\nk1 l1 l2 0.5\n.ends\nx1 p q t\nv1 p 0 1\nr1 q 0 1\n"
                "f1 0 o v1 3\nh1 h 0 v1 2\nro o 0 1\nrh h 0 1\n")
    k = nl.element("x1.k1")
    assert k.controls == ["x1.l1", "x1.l2"] and k.params["l2"].value() == 4e-6
    assert nl.element("f1").controls == ["v1"] and nl.element("h1").value.value() == 2


@pytest.mark.parametrize("card,what", [
    ("k1 l1 r1 0.5", "'r1' is not an inductor"),
    ("k1 l1 l9 0.5", "unknown element 'l9'"),
    ("f1 0 o r1 2", "controlling element 'r1' is not a voltage source"),
    ("f1 0 o poly(1) v1 0 2", "POLY controlled sources are not supported"),
    ("h1 o 0 v1", "expected 'n+ n- vname gain'"),
])
def test_errors_are_one_line(card: str, what: str) -> None:
    with pytest.raises(NetlistError, match=r"<string>:\d+: .*" + re.escape(what)):
        _parse("v1 p 0 1\nl1 p 0 1u\nr1 o 0 1\n" + card + "\n")


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_coupled_and_current_controlled_match_ngspice() -> None:
    """Two couplings (one negative) on a shared inductor, F from a sense source, H from a SIN source's
    current (measured worst NRMSE 1.3e-4)."""
    outputs = ["v(a)", "v(b)", "v(d)", "v(e)", "v(h)", "v(g)", "i(vsense)"]
    circuit = load_circuit(DATA / "coupled_ccsrc.cir", outputs=outputs)
    ng = run_ngspice(circuit)
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()), rtol=1e-6)
    nrmse = compare(ng, ref)
    assert nrmse["worst"] <= 1e-3, nrmse
