""".func, the micro sign, R ac=, malformed ignored cards and ground subcircuit ports: each read as
ngspice reads it (values checked against ngspice where ngspice is installed)."""

from __future__ import annotations

import logging

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.errors import NetlistError
from circuits.measure import compare
from circuits.netlist import parse_netlist
from circuits.ngspice import ngspice_available

needs_ngspice = pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")


def worst_vs_ngspice(path) -> float:
    """Worst node-voltage NRMSE of the reference against ngspice, on ngspice's time points."""
    circuit = load_circuit(path)
    ng = run_ngspice(circuit)
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    return compare(ng, ref)["worst"]


def _value(nl, name: str) -> float:
    return float(nl.element(name).value.evaluate(nl.resolve_params()))


def test_func_expands_with_its_arguments_and_may_be_used_before_its_definition():
    nl = parse_netlist("t\nC1 1 0 {area(2, 3)*1p}\n.func area(w,l) 'w*l + k'\n.param k=1\n"
                       ".func twice(x) {2*area(x, x)}\nC2 1 0 {twice(3)}\nV1 1 0 1\n")
    assert _value(nl, "c1") == pytest.approx(7e-12)
    assert _value(nl, "c2") == pytest.approx(20.0)


@pytest.mark.parametrize("card,match", [
    (".func f(a) a\n.func f(b) b\n", "duplicate .func 'f'"),
    (".func f(a)\n", r"\.func needs"),
    ("C1 1 0 {f(1, 2)}\n.func f(a) a\n", r"f\(\) takes 1 argument\(s\), got 2"),
])
def test_bad_func_use_is_a_one_line_error(card, match):
    with pytest.raises(NetlistError, match=match):
        parse_netlist("t\nV1 1 0 1\n" + card)


def test_max_of_one_argument_is_the_argument_as_in_ngspice():
    nl = parse_netlist("t\n.param p='max(3)'\nR1 1 0 {p}\nV1 1 0 1\n")
    assert _value(nl, "r1") == 3.0


def test_micro_sign_is_micro_in_utf8_and_latin1(tmp_path):
    for encoding in ("utf-8", "latin-1"):
        path = tmp_path / f"mu_{encoding}.cir"
        path.write_bytes("t\nI1 0 1 dc 2\u00b5\nR1 1 0 1k\nC1 1 0 1\u00b5F\n.tran 1u 10u\n".encode(encoding))
        nl = load_circuit(path).netlist
        assert float(nl.element("i1").waveform.dc.value()) == pytest.approx(2e-6)
        assert _value(nl, "c1") == pytest.approx(1e-6)


def test_resistor_ac_value_is_listed_as_ignored(caplog):
    with caplog.at_level(logging.INFO, logger="circuits.netlist"):
        nl = parse_netlist("t\nV1 1 0 1\nR1 1 0 10k ac=5k\n.tran 1n 10n\n")
    assert _value(nl, "r1") == 1e4
    assert any("r1 ac= (AC analysis only)" in r.getMessage() for r in caplog.records)


def test_malformed_probe_card_is_ignored_like_any_output_card():
    nl = parse_netlist("t\nV1 1 0 1\nR1 1 0 1\n.probe i(mn1:z) hhhh) i(())\n.tran 1n 10n\n")
    assert ".probe (line 4)" in nl.ignored


def test_ground_port_must_be_connected_to_ground():
    text = "t\n.subckt inv a gnd\nR1 a gnd 1k\n.ends\nV1 1 0 1\nX1 1 {} inv\n"
    nl = parse_netlist(text.format("0"))
    assert nl.element("x1.r1").nodes == ["1", "0"]
    with pytest.raises(NetlistError, match=r":6: x1: port '0' of subcircuit 'inv' is ground; it must be "
                                            r"connected to ground, got '2'"):
        parse_netlist(text.format("2"))


@needs_ngspice
def test_func_micro_sign_and_ground_port_match_ngspice(tmp_path):
    path = tmp_path / "deck.cir"
    path.write_bytes("""func, micro sign, ground port
.func tau(r, c) 'r*c'
.param rr=1k cc={tau(2, 0.5)*1n}
V1 in 0 PULSE(0 1 10n 1n 1n 200n 400n)
X1 in out 0 rc
.subckt rc a b gnd
R1 a b {rr}
C1 b gnd {cc}
I1 gnd b dc 20\u00b5
.ends
.tran 1n 1u
.end
""".encode())
    assert worst_vs_ngspice(path) < 1e-3


@needs_ngspice
def test_ic_on_a_node_with_an_inductor_matches_ngspice(tmp_path):
    # ngspice's .ic keeps a node row's branch-current entries (cktload.c: 1e10 (v - ic) + currents),
    # so the inductor's current stays determined (0 here); replacing the row left it singular
    path = tmp_path / "deck.cir"
    path.write_text("""ic at an inductor's node
V1 in 0 5
R1 in a 100
L1 a 0 10m
C1 a 0 1u
R2 a 0 1k
.ic v(a)=0
.tran 1u 1m
.end
""")
    assert worst_vs_ngspice(path) < 1e-3


def test_lines_ngspice_comments_out_are_listed_as_ignored():
    nl = parse_netlist("t\nV1 1 0 1\nR1 1 2 1k\nD1 2 0 dm\n.model dm D (\n+ IS=1e-14\n+ N=1\n)\n"
                       ".tran 1u 10u\n")
    assert nl.models["dm"].params["is"].value() == 1e-14  # the unclosed '(' of the .model card
    assert "')' (line 8, a comment to ngspice)" in nl.ignored


@needs_ngspice
def test_model_with_its_closing_paren_on_a_line_of_its_own_matches_ngspice(tmp_path):
    path = tmp_path / "deck.cir"
    path.write_text("paren\nV1 1 0 SIN(0 1 1k)\nR1 1 2 1k\nD1 2 0 dm\nC1 2 0 1u\n"
                    ".model dm D (\n+ IS=1e-12\n+ N=1.5\n)\n.tran 10u 2m\n.end\n")
    assert worst_vs_ngspice(path) < 1e-3


@pytest.mark.parametrize("command", ["altermod dm is=1e-12", "alterparam R = 2k",
                                     "option reltol=1e-6"])
def test_control_commands_that_change_the_circuit_before_the_analysis_are_rejected(command):
    text = f"t\n.param r=1k\nV1 in 0 DC 1\nR1 in out {{r}}\nC1 out 0 1u\n.control\nop\n{command}\ntran 10u 2m\n.endc\n"
    with pytest.raises(NetlistError, match=rf":8: .control '{command.split()[0]}' before the analysis changes"):
        parse_netlist(text)
    after = text.replace(f"{command}\ntran 10u 2m", f"tran 10u 2m\n{command}\ntran 10u 4m")  # later runs: ignored
    assert parse_netlist(after).tran.tstop == 2e-3


def test_nrmse_of_a_constant_reference_with_rounding_noise_is_relative_to_its_size():
    from circuits.measure import nrmse

    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    ref = torch.ones(11, dtype=torch.float64)
    ref[3] += 4e-16  # ngspice's "constant" 1 V
    assert float(nrmse(t, ref, t, torch.ones(11, dtype=torch.float64))) < 1e-15
    assert float(nrmse(t, ref, t, torch.full((11,), 1.01, dtype=torch.float64))) == pytest.approx(1e-2, rel=1e-6)


def test_behavioural_e_and_g_are_b_sources_and_an_ac_only_source_is_zero():
    nl = parse_netlist("t\nV1 a 0 1\nVac z 0 AC 1\nE1 m 0 VALUE={v(a)*2}\nG1 0 s cur='v(a)'\n"
                       "R1 m 0 1\nR2 s z 1\n")
    assert nl.element("e1").kind == "b" and nl.element("e1").behavior[0] == "v"
    assert nl.element("g1").kind == "b" and nl.element("g1").behavior[0] == "i"
    assert nl.element("vac").waveform.dc.value() == 0.0


@needs_ngspice
def test_behavioural_e_and_g_match_ngspice(tmp_path):
    path = tmp_path / "deck.cir"
    path.write_text("""behavioural E and G sources, an AC-only source
V1 a 0 SIN(0 1 1k)
V2 b 0 SIN(0.5 1 3k)
Vac z 0 AC 1
Emul m 0 VALUE={v(a)*v(b)}
R1 m 0 1k
Gsq 0 s cur={0.001*v(a)*v(a)}
R2 s z 1k
Evol q 0 vol='2*v(b) - v(a)'
R3 q 0 1k
.tran 10u 2m
.end
""")
    assert worst_vs_ngspice(path) < 1e-3
