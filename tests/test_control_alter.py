"""`.control` alter commands before the transient, applied as ngspice-39 applies them (circuits.alter):
each form read, checked against ngspice running the deck as written, and what cannot be applied
exactly rejected in one line."""

from __future__ import annotations

import logging

import pytest

from circuits.ngspice import ngspice_available
from tests.netlist_helpers import assert_rejected, nrmse_vs_ngspice_as_written, parse_body

BODY = """V1 in 0 DC 1
I2 0 b DC 1m
R1 in a 1k
R2 a 0 1k
C1 a 0 1n
L1 b 0 1m
R3 b 0 100
"""


def altered(*commands: str):
    """The netlist BODY with a .control block: the commands, then the transient."""
    return parse_body(BODY, ".control\n" + "\n".join(commands) + "\ntran 1u 4u\n.endc\n")


def value(nl, name: str, key: str = "value") -> float:
    el = nl.element(name)
    return (el.value if key == "value" else el.params[key]).value()


@pytest.mark.parametrize("command", ["alter @r1[resistance]=3k", "alter @r1[resistance] = 3k", "alter r1 3k",
                                     "alter r1 = 3k", "alter r1=3k", "alter r1 resistance 3k",
                                     "alter r1 resistance = 3k", "alter @r1[r]=3k", "alter #r1[r]=3k"])
def test_every_form_of_a_scalar_alter_sets_the_value(command):
    assert value(altered(command), "r1") == 3000.0


def test_the_default_parameter_is_ngspices_principal_one():
    nl = altered("alter c1 10n", "alter l1 2m", "alter v1 2", "alter i2 -3m")
    assert (value(nl, "c1"), value(nl, "l1")) == (10e-9, 2e-3)
    assert nl.element("v1").waveform.args[0].value() == 2.0 and nl.element("v1").waveform.dc.value() == 2.0
    assert nl.element("i2").waveform.args[0].value() == -3e-3


def test_m_and_scale_are_alterable():
    nl = altered("alter @r2[m]=2", "alter @c1[scale]=3", "alter l1 m 4")
    assert (value(nl, "r2", "m"), value(nl, "c1", "scale"), value(nl, "l1", "m")) == (2.0, 3.0, 4.0)


def test_a_vector_replaces_the_waveform_and_keeps_the_dc_value():
    for command in ("alter @v1[pulse] = [ 0 1 1u 1u 1u 1u 4u ]", "alter v1 pulse [ 0 1 1u 1u 1u 1u 4u ]",
                    "alter v1 pulse = [ 0 1 1u 1u 1u 1u 4u ]"):
        wave = altered(command).element("v1").waveform
        assert wave.kind == "pulse" and [a.value() for a in wave.args] == [0, 1, 1e-6, 1e-6, 1e-6, 1e-6, 4e-6]
        assert wave.dc.value() == 1.0
    wave = altered("alter @i2[sine] = [ 0 1m 1meg ]").element("i2").waveform
    assert wave.kind == "sin" and [a.value() for a in wave.args] == [0, 1e-3, 1e6]


def test_dc_of_a_time_dependent_source_leaves_its_transient_alone():
    """vsrcload.c: the transient (and its operating point) read the waveform, not the dc value."""
    nl = altered("alter @v1[pulse] = [ 0 1 1u ]", "alter @v1[dc] = 5")
    assert nl.element("v1").waveform.kind == "pulse" and nl.element("v1").waveform.dc.value() == 5.0


def test_alters_after_the_analysis_change_nothing():
    nl = altered("alter r1 2k")
    nl2 = parse_body(BODY, ".control\ntran 1u 4u\nalter r1 5k\nreset\nalterparam x = 1\n.endc\n")
    assert value(nl, "r1") == 2000.0 and value(nl2, "r1") == 1000.0


@pytest.mark.parametrize("command, why", [
    ("alter v1 pulse(0 1 1u 1u 1u 1u 4u)", "Only a single param - value pair supported"),
    ("alter @v1[pulse]=[0 1 1u 1u 1u 1u 4u]", "cannot evaluate new parameter value"),
])
def test_forms_ngspice_fails_on_change_nothing_with_a_warning(command, why, caplog):
    with caplog.at_level(logging.WARNING, logger="circuits.alter"):
        nl = altered(command)
    assert nl.element("v1").waveform.kind == "dc" and nl.element("v1").waveform.args[0].value() == 1.0
    assert why in caplog.text and "changes nothing" in caplog.text


@pytest.mark.parametrize("command, what", [
    ("alter @v1[dc]=2*3", "value '2*3' is not a number"),
    ("alter @v1[dc]=2 3", "unexpected '3' after the value"),
    ("alter @x1[dc]=2", "no device 'x1' at the top level"),
    ("alter @r1[tc1]=1", "parameter 'tc1' cannot be altered"),
    ("alter @v1[pulse] = [ 0 ]", "PULSE needs 2 to 7 values, got 1"),
    ("alter @v1[trnoise] = [ 0 1 ]", "parameter 'trnoise' cannot be altered"),
    ("alter @r1[resistance]", "expected 'alter dev [param] value'"),
    ("alter r1 =", "no assignment found"),
])
def test_what_cannot_be_applied_exactly_is_rejected_in_one_line(command, what):
    assert_rejected(BODY, 10, what, tail=f".control\n{command}\ntran 1u 4u\n.endc\n")


def test_other_circuit_changes_before_the_analysis_stay_rejected():
    assert_rejected(BODY, 11, ".control 'reset' before the analysis", tail=".control\nalter r1 2k\nreset\n.endc\n")


ALTER_DECK = """alters before the transient
.param rv=1k
V1 in 0 DC 1 AC 1
R1 in a {rv}
C1 a 0 100n
I2 0 b SIN(0 1m 10k)
R2 b 0 1k
L2 b c 10m
R3 c 0 100
V3 d 0 DC 2
R5 d 0 1k
R4 in e 1k
C4 e 0 10n
.control
op
alter @v1[dc]=0
alter V1 PULSE(0 1 0 1u 1u 5m 10m)
alter @v1[pulse] = [ 0 1 10u 1u 1u 100u 200u ]
alter r1 2k
alter @c1[capacitance] = 47n
alter i2 sin [ 0 2m 20k ]
alter @l2[m]=2
alter l2 inductance = 4m
alter v3 3
alter @c4[scale]=4
tran 1u 400u
alter r1 100k
alter @v1[pulse] = [ 0 5 0 ]
.endc
.end
"""


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_alters_before_the_transient_match_ngspice(tmp_path):
    path = tmp_path / "alter.cir"
    path.write_text(ALTER_DECK)
    errors = nrmse_vs_ngspice_as_written(path)
    assert errors["worst"] <= 1e-3, errors
    assert set(errors) >= {"v(a)", "v(b)", "v(c)", "v(e)"}
