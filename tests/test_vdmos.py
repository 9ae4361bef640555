"""VDMOS power MOSFET (M d g s, .model vdmos [pchan]): netlist forms, rejected parameters, the ngspice
deck writer, and ngspice-39's VDMOS model (drain current, series resistances, body diode, gate
capacitances) vs ngspice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.dae import assemble
from circuits.measure import compare
from circuits.ngspice import circuit_deck, ngspice_available
from tests.netlist_helpers import assert_rejected, nrmse_vs_ngspice, parse_body

DATA = Path(__file__).parent / "data"
# ngspice stops ("timestep too small") on the half bridge at trtol=1 with reltol 1e-6
_NGSPICE_OPTIONS = {"reltol": 1e-6, "abstol": 1e-14, "vntol": 1e-8, "chgtol": 1e-17, "trtol": 7}


def test_vdmos_instance_has_three_nodes_and_pchan_makes_a_p_channel_model() -> None:
    """pchan is a bare word anywhere on the card; the card's m is the grading coefficient (mj), the
    instance's m the multiplier; ngspice's datasheet annotations (ron= vds= qg= mfg=) are dropped."""
    nl = parse_body(".model p1 vdmos(kp=2 pchan m=0.4 ron=0.1 vds=100 qg=5n mfg=acme)\n"
                    ".model n1 vdmos kp=3\nM1 d g s p1 m=2\nM2 d g 0 n1\nR1 d g 1\n")
    m1 = nl.element("m1")
    assert m1.nodes == ["d", "g", "s"] and m1.params["m"].value() == 2
    params = nl.models["p1"].params
    assert params["pchan"].value() == 1 and params["mj"].value() == 0.4
    assert not {"ron", "vds", "qg", "mfg"} & set(params) and "pchan" not in nl.models["n1"].params


@pytest.mark.parametrize("body,what", [
    (".model n1 vdmos(rq=0.1 vq=5)\nM1 d g 0 n1\n", "'rq' is not supported: quasi-saturation"),
    (".model n1 vdmos(tnom=50)\nM1 d g 0 n1\n", "'tnom' is not supported"),
    (".model n1 vdmos(kp=1)\nM1 d g 0 n1 thermal\n", "m1: parameter 'thermal' is not supported: self-heating"),
    (".model n1 vdmos(kp=1)\nM1 d g 0 tj tc n1\n", "m1: thermal nodes (tj tc)"),
    (".model n1 vdmos(kp=1)\nM1 d g 0 0 n1\n", "m1: expected 3 nodes and a model name"),
    (".model n1 vdmos(kp=1)\nM1 d g 0 n1 icvds=1\n", "m1: parameter 'icvds' is not supported"),
    (".model n1 nmos(kp=1)\nM1 d g 0 n1\n", "m1: expected 4 nodes and a model name"),
    (".model n1 vdmos(bogus=1)\nM1 d g 0 n1\n", "unknown parameter 'bogus'"),
])
def test_unsupported_vdmos_features_are_rejected_in_one_line(body: str, what: str) -> None:
    line = 3 if body.startswith(".model n1 vdmos(kp=1)") or "nmos" in body else 2
    assert_rejected(body + "R1 d g 1\n", line, what)


def test_temperature_noise_and_safe_operating_area_parameters_are_accepted() -> None:
    nl = parse_body(".model n1 vdmos(tcvth=1m mu=-1.5 texp0=1.5 trd1=1m eg=1.11 xti=3 kf=1e-20 af=1 "
                    "rthjc=1 cthj=1m vds_max=100 id_max=10 tnom=27 vth0=2)\nM1 d g 0 n1\nR1 d g 1\n")
    assert nl.models["n1"].params["vto"].value() == 2


def test_series_resistances_add_internal_nodes_only_where_positive() -> None:
    """As ngspice's VDMOSsetup: an internal node for each of RD RG RS RB that is positive."""
    circuit = load_circuit(DATA / "vdmos_iv.cir", outputs=["i(vd1)"])
    names = set(assemble(circuit).state_names)
    assert {"m1.drain", "m1.gate", "m1.source", "m1.body", "m8.body"} <= names
    assert not any(n.startswith(("m3.", "m5.", "m6.gate")) for n in names)


def test_ngspice_deck_writes_vdmos_cards_back() -> None:
    """3-node instances, pchan as a bare word, the grading coefficient under VDMOS's name m."""
    circuit = load_circuit(DATA / "vdmos_bridge.cir", outputs=["v(out)"])
    text = circuit_deck(circuit).text
    assert "mp out in vdd px\n" in text and "mn out in 0 nx m=2\n" in text
    assert ".model px vdmos pchan kp=2 " in text and " m=0.4 " in text and "mj=" not in text


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_drain_current_sweeps_match_ngspice_for_n_and_p_channel() -> None:
    """Drains ramped through both signs at several gate voltages: weak inversion, triode and
    saturation, reverse mode, the body diode forward and in breakdown; every drain-current parameter,
    RD RS RG RB RDS and m in some model (measured 7.7e-6; the rest is interpolation at the steep
    forward-diode start)."""
    outputs = ["i(vd1)", "i(vd2)", "i(vd3)", "i(vd4)", "i(vd5)"]
    nrmse = nrmse_vs_ngspice(DATA / "vdmos_iv.cir", outputs)
    assert nrmse["worst"] <= 1e-4, nrmse


@pytest.mark.slow
@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_corpus_inverter_transient_matches_ngspice() -> None:
    """ngspice's own VDMOS inverter example (RG 5k, RB 1G, CGS, nonlinear CGD, CJO; measured 2.9e-4:
    its output has no capacitance, so its edges are steep and the rest is interpolation)."""
    nrmse = nrmse_vs_ngspice(DATA / "corpus" / "ng_vdmos_inv.cir", ["v(3)"])
    assert nrmse["worst"] <= 1e-3, nrmse


@pytest.mark.slow
@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_half_bridge_with_non_default_models_matches_ngspice() -> None:
    """Non-default KP VTO LAMBDA THETA MTRIODE, RD RS RG RB, CGS and CGD, the lower body diode
    conducting and recovering (CJO VJ M TT), m=2 (which ngspice-39 does not apply to CGS and CGD) (measured 1.1e-4)."""
    circuit = load_circuit(DATA / "vdmos_bridge.cir", outputs=["v(out)", "i(ll)"])
    ng = run_ngspice(circuit, options=_NGSPICE_OPTIONS)
    assert float(ng["v(out)"].min()) < -0.3  # the inductor drives the output below ground: nx's body diode
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    nrmse = compare(ng, ref)
    assert nrmse["worst"] <= 1e-3, nrmse
