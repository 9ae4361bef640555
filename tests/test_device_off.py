"""``off`` on BJTs, MOSFETs and diodes as ngspice-39 solves the DC operating point (niiter.c: the
instance's junction voltages are 0 in MODEINITJCT and held there through MODEINITFIX, then released
in MODEINITFLOAT): in a bistable circuit it selects the state, checked against ngspice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from circuits import load_circuit, simulate
from circuits.ngspice import ngspice_available
from scripts.compat_corpus import run_deck, run_ngspice_deck
from tests.netlist_helpers import parse_body

pytestmark = [pytest.mark.ngspice, pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")]

BJT_LATCH = """bjt latch: cross-coupled NPN inverters
Vcc vcc 0 5
Rc1 vcc c1 1k
Rc2 vcc c2 1k
Rb1 c2 b1 10k
Rb2 c1 b2 10k
Q1 c1 b1 0 qn {q1}
Q2 c2 b2 0 qn {q2}
.model qn npn bf=100 is=1e-16 cje=1p cjc=1p
.tran 1n 100n
.end
"""

CMOS_LATCH = """cmos latch: cross-coupled inverters
Vdd vdd 0 3.3
Mp1 q qb vdd vdd pch w=2u l=1u
Mn1 q qb 0 0 nch w=1u l=1u {q1}
Mp2 qb q vdd vdd pch w=2u l=1u
Mn2 qb q 0 0 nch w=1u l=1u {q2}
Cq q 0 10f
Cqb qb 0 10f
.model nch nmos vto=0.7 kp=100u lambda=0.02
.model pch pmos vto=-0.7 kp=40u lambda=0.02
.tran 1n 100n
.end
"""

DIODE_CLIPPER = """diode clipper with the diode off at the start of the DC Newton
V1 in 0 SIN(0.8 2 1meg)
R1 in out 1k
D1 out 0 dmod {q1}
.model dmod d is=1e-14 rs=10 cjo=1p
.tran 10n 3u
.end
"""


def _worst_volts(path: Path) -> tuple[float, dict[str, float]]:
    """Largest |NeuroSPICE - ngspice| over every node voltage at ngspice's points, and ngspice's
    node voltages at t = 0."""
    ng = run_ngspice_deck(path)
    ours = simulate(load_circuit(path), t=torch.tensor(ng["time"].to_numpy().copy()))
    cols = [c for c in ours.columns if c.startswith("v(")]
    worst = max(float(np.abs(ours[c].to_numpy() - ng[c].to_numpy()).max()) for c in cols)
    return worst, {c: float(ng[c].iloc[0]) for c in cols}


@pytest.mark.parametrize("deck,flags,high,low", [
    (BJT_LATCH, {"q1": "off", "q2": ""}, "v(c1)", "v(c2)"),
    (BJT_LATCH, {"q1": "", "q2": "off"}, "v(c2)", "v(c1)"),
    (CMOS_LATCH, {"q1": "off", "q2": ""}, "v(q)", "v(qb)"),
    (CMOS_LATCH, {"q1": "", "q2": "off"}, "v(qb)", "v(q)"),
])
def test_off_selects_ngspices_latch_state(tmp_path, deck, flags, high, low):
    """The latches hold their DC state: every node within 1 mV of ngspice's at all of its points."""
    path = tmp_path / "deck.cir"
    path.write_text(deck.format(**flags))
    worst, at0 = _worst_volts(path)
    assert at0[high] > at0[low] + 1.0  # the state the flag chose in ngspice
    assert worst <= 1e-3, worst


def test_latch_keeps_its_state_after_a_source_corner(tmp_path):
    """A write that agrees with the state (q low, pulled low through an access transistor): after
    the word line's falling corner the latch stays as in ngspice (a quadratic predictor through the
    point before the corner put v(wl) at 5.9 V and Newton into the other state)."""
    deck = CMOS_LATCH.format(q1="", q2="off").replace(
        "Cq q 0 10f", "Vwl wl 0 PULSE(0 3.3 40n 1n 1n 20n 1)\nMa q wl 0 0 nch w=4u l=1u\nCq q 0 10f")
    path = tmp_path / "deck.cir"
    path.write_text(deck)
    worst, at0 = _worst_volts(path)
    assert at0["v(qb)"] > at0["v(q)"] + 1.0
    assert worst <= 1e-3, worst


def test_diode_off_matches_ngspice(tmp_path):
    path = tmp_path / "deck.cir"
    path.write_text(DIODE_CLIPPER.format(q1="off"))
    result = run_deck(path, check_reference=False)
    assert result.status == "match", (result.status, result.nrmse, result.reason)


def test_off_is_a_flag_anywhere_after_the_nodes():
    nl = parse_body("M1 d g 0 0 nch w=1u off l=1u\nQ1 c b e qn 2 off\n",
                    ".model nch nmos\n.model qn npn\n")
    assert nl.element("m1").params["off"].value() == 1.0
    q1 = nl.element("q1").params
    assert (q1["off"].value(), q1["area"].value()) == (1.0, 2.0)
