"""Netlists as ngspice users write them: every accepted card changes the transient exactly as
ngspice does (checked against ngspice or analytic values), or is listed as ignored in one info line."""

from __future__ import annotations

import logging

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.errors import ConfigError, NetlistError
from circuits.measure import compare
from circuits.netlist import parse_netlist
from circuits.ngspice import ngspice_available

def deck(tmp_path, text: str, name: str = "deck.cir"):
    """Write a netlist file and return its path."""
    path = tmp_path / name
    path.write_text(text)
    return path


def nrmse_vs_ngspice(path, **overrides) -> float:
    """Worst NRMSE of the reference against ngspice on ngspice's time points."""
    circuit = load_circuit(path, **overrides)
    ng = run_ngspice(circuit)
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    return compare(ng, ref)["worst"]


HALF_WAVE = """half-wave rectifier, no capacitor: only the step ceiling samples the sine
V1 in 0 SIN(0 5 1k)
D1 in out dmod
R1 out 0 1k
.model dmod d is=1e-14
.tran 10u 5m
.end
"""


@pytest.mark.parametrize("tran,expected", [
    (".tran 10u 5m", 10e-6),            # tstep < tstop/50
    (".tran 1m 5m", 5e-3 / 50),         # tstop/50 < tstep
    (".tran 10u 5m 1m", 10e-6),         # (tstop - tstart)/50 = 80u
    (".tran 1m 5m 1m", 4e-3 / 50),
    (".tran 10u 5m 0 1u", 1e-6),        # tmax given: used as is (also above tstop/50)
    (".tran 10u 5m 0 1m", 1e-3),
])
def test_raw_netlist_step_ceiling_is_ngspices(tmp_path, tran, expected):
    path = deck(tmp_path, HALF_WAVE.replace(".tran 10u 5m", tran))
    assert load_circuit(path).max_step == pytest.approx(expected)


@pytest.mark.parametrize("name", ["rc", "amp", "ring5", "feram"])
def test_shipped_configs_keep_the_error_controlled_step(name):
    circuit = load_circuit(name)
    assert circuit.max_step == pytest.approx(circuit.tstop / 50)


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_step_ceiling_samples_a_sine_like_ngspice(tmp_path):
    # tstop/50 steps (the old ceiling) gave NRMSE 2.9e-2 here
    assert nrmse_vs_ngspice(deck(tmp_path, HALF_WAVE)) <= 2e-3


ELEMENT_IC = """RLC ring-down from element initial conditions
C1 a 0 1u ic=2
L1 a b 1m ic=-5m
R1 b 0 10
C2 b c 2u ic=0.5
R2 c 0 100
.tran 1u 1m uic
.end
"""


@pytest.mark.ngspice
@pytest.mark.parametrize("uic", [True, False], ids=["uic", "no_uic"])
def test_element_initial_conditions_match_ngspice(tmp_path, uic):
    if not ngspice_available():
        pytest.skip("ngspice not installed")
    text = ELEMENT_IC if uic else ELEMENT_IC.replace(" uic", "")
    # with uic the ic= values were ignored before (NRMSE 0.29); without uic ngspice ignores them
    assert nrmse_vs_ngspice(deck(tmp_path, text)) <= 1e-3


def test_capacitor_ic_with_uic_is_the_analytic_rc_discharge(tmp_path):
    path = deck(tmp_path, "rc discharge\nC1 a 0 1u ic=3\nR1 a 0 1k\n.tran 10u 5m uic\n.end\n")
    t = torch.linspace(0.5e-3, 5e-3, 10)
    v = simulate(load_circuit(path), t=t)["v(a)"].to_numpy()
    exact = 3 * torch.exp(-t / 1e-3).numpy()
    assert abs(v - exact).max() <= 1e-4 * 3


def test_element_ic_without_uic_is_listed_as_ignored(caplog):
    with caplog.at_level(logging.INFO, logger="circuits.netlist"):
        nl = parse_netlist(ELEMENT_IC.replace(" uic", ""), file="rlc.cir")
    assert any("c1 ic= without uic" in item for item in nl.ignored)
    assert len(caplog.records) == 1


PULSE_DEFAULTS = """pulse with pw and per defaulted
V1 in 0 PULSE(0 1 0)
R1 in out 1k
C1 out 0 1n
.tran 10n 5u
.end
"""


def test_pulse_with_defaulted_width_and_period_is_v2_at_tstop(tmp_path):
    # ngspice: tr = tstep, pw = per = tstop, and the period wraps only once t - td > per
    circuit = load_circuit(deck(tmp_path, PULSE_DEFAULTS), outputs=["v(in)"])
    v = simulate(circuit, t=[0.0, 5e-9, 2.5e-6, 5e-6])["v(in)"].tolist()
    assert v == pytest.approx([0.0, 0.5, 1.0, 1.0])


def test_pulse_and_sine_zero_arguments_take_ngspices_defaults():
    from circuits.waveforms import pulse, sine

    t = torch.tensor([0.5, 2.0, 9.0, 10.0])
    given = pulse(t, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, tstep=1.0, tstop=10.0)
    omitted = pulse(t, 0.0, 1.0, 0.0, tstep=1.0, tstop=10.0)
    assert torch.equal(given, omitted) and omitted.tolist() == [0.5, 1.0, 1.0, 1.0]
    assert torch.equal(sine(t, 0.0, 1.0, 0.0, tstop=10.0), sine(t, 0.0, 1.0, tstop=10.0))


@pytest.mark.ngspice
def test_pulse_defaults_match_ngspice(tmp_path):
    if not ngspice_available():
        pytest.skip("ngspice not installed")
    assert nrmse_vs_ngspice(deck(tmp_path, PULSE_DEFAULTS)) <= 1e-3  # was 2.4e-2 (v(in) at tstop)


def test_output_times_outside_the_window_are_a_one_line_error():
    rc = load_circuit("rc")
    for t in ([1e-6], [-1e-12, 1e-9]):
        with pytest.raises(ConfigError, match=r"output time .* is outside the simulated window") as info:
            simulate(rc, t=t)
        assert "\n" not in str(info.value)


CONTROL = ("control block, CRLF and Latin-1 \xb5\r\n* r\xe9sistance\r\nV1 in 0 SIN(0 1 1meg)\r\n"
           "R1 in out 1k\r\nC1 out 0 1n\r\n.print tran v(out)\r\n.op\r\n.control\r\nset x=1\r\n"
           "tran 10n 3u 1u\r\nplot v(out)\r\n.endc\r\n.end\r\n")


@pytest.mark.ngspice
def test_control_tran_with_tstart_crlf_latin1(tmp_path, caplog):
    path = tmp_path / "ctrl.cir"
    path.write_bytes(CONTROL.encode("latin-1"))
    with caplog.at_level(logging.INFO, logger="circuits.netlist"):
        circuit = load_circuit(path)
    assert (circuit.tstep, circuit.tstop, circuit.tstart) == (10e-9, 3e-6, 1e-6)
    (record,) = caplog.records
    assert record.getMessage().endswith(".print (line 6), .op (line 7), .control 'set' (line 9), "
                                        ".control 'plot' (line 11)")
    df = simulate(circuit)
    assert df.time.min() >= 1e-6 and df.time.max() == pytest.approx(3e-6)
    if ngspice_available():
        assert nrmse_vs_ngspice(path) <= 1e-3


def test_a_tran_card_wins_over_the_control_block():
    nl = parse_netlist("t\nR1 a 0 1\n.tran 1n 2n\n.control\ntran 1 2\n.endc\n")
    assert (nl.tran.tstep, nl.tran.tstop) == (1e-9, 2e-9)
    assert nl.ignored == [".control 'tran' (line 5)"]


@pytest.mark.parametrize("body,match", [
    ("R1 a 0 1\n.control\ntran 1n 2n\n", r"^d.cir:3: unterminated \.control"),
    ("R1 a 0 1\n.endc\n", r"^d.cir:3: \.endc without \.control"),
    ("R1 a 0 1\n.temp 50\n", r"^d.cir:3: temp 50: only 27 C is supported"),
    ("R1 a 0 1\n.options tnom=25\n", r"^d.cir:3: tnom 25: only 27 C"),
    ("R1 a 0 1\n.options method=gear maxord=1\n", r"^d.cir:3: \.options maxord=1 is not supported"),
    ("R1 a 0 1\n.options method=euler\n", r"^d.cir:3: option method=euler"),
    ("R1 a 0 1\n.model n1 nmos level=14 version=4.5.0 toxe=1n\n",
     r"^d.cir:3: MOSFET level 14 \(n1\) is not supported; supported: 1, 2, 3, 6$"),
    ("R1 a 0 1\n.model n1 nmos vt0=1 vto=1\n", r"both 'vt0' and 'vto'"),
])
def test_unsupported_settings_are_one_line_errors(body, match):
    with pytest.raises(NetlistError, match=match) as info:
        parse_netlist("title\n" + body, file="d.cir")
    assert "\n" not in str(info.value)


def test_options_the_reference_honours():
    from circuits.simulation import netlist_solver_options

    text = ("t\nR1 a 0 1\nC1 a 0 1\n.options reltol=1e-7 vntol=1e-9 abstol=1e-15 method=gear trtol=1 "
            "noacct\n.tran 1 2\n")
    nl = parse_netlist(text)
    assert nl.options == {"reltol": 1e-7, "vntol": 1e-9, "abstol": 1e-15, "method": "gear"}
    assert nl.ignored == [".options trtol (line 4)", ".options noacct (line 4)"]
    circuit = load_circuit_from_text(text)
    solver = netlist_solver_options(circuit)
    assert solver["method"] == "bdf2" and solver["rtol"] == 1e-7
    assert solver["atol_scale"] == pytest.approx(1e-6)  # abstol 1e-15 A against the reference's 1e-9
    loose = load_circuit_from_text(text.replace("reltol=1e-7 vntol=1e-9 abstol=1e-15 ", ""))
    assert "rtol" not in netlist_solver_options(loose)


def load_circuit_from_text(text: str):
    """A raw-netlist Circuit from text (no design space)."""
    from circuits.circuit import Circuit
    from circuits.params import ParamSpace

    nl = parse_netlist(text)
    return Circuit("t", nl, ParamSpace([]), [f"v({n})" for n in nl.nodes()], nl.tran.tstop, nl.tran.tstep)


def test_vt0_is_vto():
    a = parse_netlist("t\nM1 d g 0 0 n1\n.model n1 nmos vt0=0.7 kp=1e-4\n")
    assert set(a.models["n1"].params) == {"vto", "kp"} and a.models["n1"].params["vto"].value() == 0.7


def test_global_nodes_connect_inside_subcircuits():
    nl = parse_netlist("t\n.global vdd\n.subckt load a\nR1 a vdd 1k\n.ends\nX1 out load\n"
                       "VDD vdd 0 1\nR2 out 0 1k\n.tran 1n 2n\n")
    assert nl.element("x1.r1").nodes == ["out", "vdd"]
    circuit = load_circuit_from_text("t\n.global vdd\n.subckt load a\nR1 a vdd 1k\n.ends\nX1 out load\n"
                                     "VDD vdd 0 1\nR2 out 0 1k\n.tran 1n 2n\n")
    assert simulate(circuit, t=[1e-9])["v(out)"].item() == pytest.approx(0.5)


def test_ignored_analysis_cards_are_one_info_line(caplog):
    cards = [".print tran v(a)", ".plot tran v(a)", ".probe", ".save all", ".op", ".width out=80",
             ".four 1k v(a)", ".meas tran x max v(a)", ".measure tran y min v(a)", ".ac dec 10 1 1g",
             ".dc v1 0 1 0.1", ".noise v(a) v1 dec 10 1 1g", ".disto dec 10 1 1g", ".tf v(a) v1",
             ".sens v(a)", ".pz a 0 a 0 vol pz"]
    with caplog.at_level(logging.INFO, logger="circuits.netlist"):
        nl = parse_netlist("t\nV1 a 0 1\nR1 a 0 1\n" + "\n".join(cards) + "\n.tran 1n 2n\n", file="x.cir")
    assert len(nl.ignored) == len(cards)
    (record,) = caplog.records
    assert record.getMessage().startswith("x.cir: ignored (no effect on the transient): .print (line 4), ")


def test_gear_maxord_above_two_is_order_two_as_in_ngspice(tmp_path):
    """ngspice never raises the transient order above 2: maxord=3 and 6 give its maxord=2 waveform bit
    for bit, so the reference (gear = BDF2) accepts them."""
    import shutil
    import subprocess

    deck = ("gear\nV1 in 0 PULSE(0 1 0 1n 1n 5n 12n)\nR1 in a 1k\nC1 a 0 1p\nR2 a b 2k\nC2 b 0 2p\n"
            ".tran 0.1n 30n\n.options method=gear maxord={order}\n")
    nl = parse_netlist(deck.format(order=3))
    assert nl.options["maxord"] == 3 and nl.options["method"] == "gear"
    if shutil.which("ngspice") is None:
        pytest.skip("ngspice not installed")
    outputs = []
    for order in (2, 3, 6):
        out = tmp_path / f"o{order}.txt"
        (tmp_path / f"d{order}.cir").write_text(deck.format(order=order) + f".control\nrun\nwrdata {out} v(b)\n.endc\n.end\n")
        subprocess.run(["ngspice", "-b", str(tmp_path / f"d{order}.cir")], capture_output=True, timeout=60)  # exit 1: "no simulations run" in batch mode
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0].splitlines()) > 50
