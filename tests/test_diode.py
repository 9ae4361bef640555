"""Diode (D, .model d): ngspice's level-1 dio model with RS, breakdown, area and m."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.measure import compare
from circuits.ngspice import ngspice_available
from tests.netlist_helpers import assert_rejected, parse_body

DATA = Path(__file__).parent / "data"


def _parse(body: str):
    return parse_body(body, tail="R1 a 0 1\n")


def test_grading_m_and_multiplier_m() -> None:
    """The model's 'm' (grading) is kept as its ngspice alias 'mj'; the instance 'm' is the multiplier."""
    nl = _parse(".model dd d(m=0.4 pb=0.7 cj0=1p ib=1m)\nD1 a 0 dd 2 m=3\n")
    assert {"mj", "vj", "cjo", "ibv"} <= set(nl.models["dd"].params)
    d1 = nl.element("d1")
    assert d1.params["area"].value() == 2 and d1.params["m"].value() == 3


@pytest.mark.parametrize("card,what", [
    (".model dd d(ikf=1m)", "'ikf' is not supported: the knee currents"),
    (".model dd d(isw=1e-15)", "'isw' is not supported"),
    (".model dd d(tnom=50)", "'tnom' is not supported"),
    (".model dd d(level=3)", "diode level 3 (dd) is not supported; supported: 1"),
])
def test_unsupported_diode_parameters_are_rejected(card: str, what: str) -> None:
    assert_rejected(card + "\nD1 a 0 dd\n", 2, what, tail="R1 a 0 1\n")


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_diode_matches_ngspice() -> None:
    """Forward with RS, reverse breakdown with NBV, positional and model area, m, TT and FC charge."""
    circuit = load_circuit(DATA / "diode_full.cir", outputs=["v(a)", "v(k)", "v(b)", "v(c)"])
    ng = run_ngspice(circuit)
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()), rtol=1e-6)
    nrmse = compare(ng, ref)
    assert nrmse["worst"] <= 1e-3, nrmse
