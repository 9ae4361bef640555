"""MOSFET level 1 (M, .model nmos/pmos): parameters ngspice derives, rejected parameters, and the
complete mos1 (junctions, overlap and Meyer capacitances, NSUB-derived parameters, m=) vs ngspice."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuits import load_circuit
from circuits.ngspice import ngspice_available
from tests.netlist_helpers import MEYER_NGSPICE_OPTIONS, assert_rejected, nrmse_vs_ngspice, parse_body

DATA = Path(__file__).parent / "data"


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
    (".model m1 nmos(level=4)", "MOSFET level 4 (m1) is not supported; supported: 1, 2, 3, 6"),
    (".model m1 nmos(level=3 lambda=0.1)", "unknown parameter 'lambda'"),
    (".model m1 nmos(level=1 vmax=1e5)", "unknown parameter 'vmax'"),
    (".model m1 nmos(level=2 kappa=0.2)", "unknown parameter 'kappa'"),
    # level 6 (mos6) has KC/NC/KV/NV instead of KP and no noise parameters
    (".model m1 nmos(level=6 kp=2e-5)", "unknown parameter 'kp'"),
    (".model m1 nmos(level=6 kf=1e-25)", "unknown parameter 'kf'"),
    (".model m1 nmos(level=6 rs=5)", "'rs' is not supported: series resistances"),
    (".model m1 nmos(level=6 tnom=50)", "'tnom' is not supported"),
    (".model m1 nmos(level=1 kc=5e-5)", "unknown parameter 'kc'"),
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
    nrmse = nrmse_vs_ngspice(DATA / "mos1_full.cir", ["v(n1)", "v(n2)", "v(out)"], MEYER_NGSPICE_OPTIONS, rtol=1e-6)
    assert nrmse["worst"] <= 1e-3, nrmse


def test_levels_2_and_3_are_their_own_devices() -> None:
    """level=2 and level=3 cards get ngspice's mos2/mos3 defaults (MJSW 0.33, TOX 0.1 um: Meyer states)."""
    from circuits.dae import assemble
    circuit = load_circuit(DATA / "mos23_inv.cir", outputs=["v(a2)"])
    dae = assemble(circuit)
    kinds = {type(g.device).__name__ for g in dae.groups}
    assert {"Mos2", "Mos3"} <= kinds
    assert "mn1.dvgs" in dae.state_names
    mos2 = next(g.device for g in dae.groups if type(g.device).__name__ == "Mos2")
    assert mos2.model_params["mjsw"] == 0.33 and mos2.model_params["tox"] == 1e-7


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_mos2_mos3_drain_current_sweeps_match_ngspice() -> None:
    """I-V sweeps (drain ramped -0.3..5 V, NMOS and PMOS, forward and reverse mode) at several gate
    and bulk biases, every level-2/3 drain-current parameter in some model (measured 8.9e-8)."""
    nrmse = nrmse_vs_ngspice(DATA / "mos23_iv.cir", ["i(vd2)", "i(vp2)", "i(vd3)", "i(vp3)"])
    assert nrmse["worst"] <= 1e-5, nrmse


@pytest.mark.slow
@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_mos2_mos3_inverter_chains_match_ngspice() -> None:
    """CMOS inverter chains at level 2 and 3 with junction, overlap and Meyer capacitances
    (measured 4.2e-4)."""
    nrmse = nrmse_vs_ngspice(DATA / "mos23_inv.cir", ["v(a1)", "v(a2)", "v(b1)", "v(b2)"], MEYER_NGSPICE_OPTIONS,
                             rtol=1e-6)
    assert nrmse["worst"] <= 1e-3, nrmse
