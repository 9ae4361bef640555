"""MOSFET level 1 (M, .model nmos/pmos): parameters ngspice derives, rejected parameters, and the
complete mos1 (junctions, overlap and Meyer capacitances, NSUB-derived parameters, m=) vs ngspice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.measure import compare
from circuits.ngspice import ngspice_available
from tests.netlist_helpers import assert_rejected, parse_body

DATA = Path(__file__).parent / "data"
# ngspice itself stops ("timestep too small") on Meyer's capacitances at the default reltol 1e-7
_NGSPICE_OPTIONS = {"reltol": 1e-6, "abstol": 1e-14, "vntol": 1e-8, "chgtol": 1e-17}


def _parse(body: str):
    return parse_body(body)


def test_meyer_states_only_with_tox() -> None:
    """A MOSFET whose model gives TOX carries Meyer's three derivative states; others none."""
    from circuits.dae import assemble
    circuit = load_circuit(DATA / "mos1_full.cir", outputs=["v(out)"])
    names = assemble(circuit).state_names
    assert {"mn1.dvgs", "mn1.dvgd", "mn1.dvgb", "mp2.dvgb"} <= set(names)
    nl = _parse(".model n nmos(vto=0.5 cbd=1f)\nM1 d g 0 0 n\nR1 d g 1\n")
    assert nl.models["n"].params["cbd"].value() == 1e-15


@pytest.mark.parametrize("card,what", [
    (".model m1 nmos(rd=10)", "'rd' is not supported: series resistances"),
    (".model m1 nmos(tnom=50)", "'tnom' is not supported"),
    (".model m1 nmos(level=3)", "MOSFET level 3 (m1) is not supported; supported: 1"),
])
def test_unsupported_model_parameters_are_rejected(card: str, what: str) -> None:
    assert_rejected(card + "\nM1 d g 0 0 m1\nR1 d g 1\n", 2, what)


def test_inert_parameters_accepted() -> None:
    """rd=0, rs=0, noise parameters and u0 (ngspice's name of uo) are accepted."""
    nl = _parse(".model m1 nmos(rd=0 rs=0 kf=1e-25 af=1 u0=500 tox=10n)\nM1 d g 0 0 m1 nrd=2\nR1 d g 1\n")
    assert nl.models["m1"].params["uo"].value() == 500


@pytest.mark.slow
@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_mos1_complete_matches_ngspice() -> None:
    """CMOS inverter chain, PULSE-driven: NSUB/NSS/TPG-derived VTO GAMMA PHI, KP from UO, JS with
    AD/AS, CJ/CJSW with AD/AS/PD/PS, CBD/CBS, overlap and Meyer capacitances, m=2 (measured 5.9e-5)."""
    circuit = load_circuit(DATA / "mos1_full.cir", outputs=["v(n1)", "v(n2)", "v(out)"])
    ng = run_ngspice(circuit, options=_NGSPICE_OPTIONS)
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()), rtol=1e-6)
    nrmse = compare(ng, ref)
    assert nrmse["worst"] <= 1e-3, nrmse
