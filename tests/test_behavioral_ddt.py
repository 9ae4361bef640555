"""ddt() in B sources: the time derivative as an internal state of the DAE, against ngspice."""

from __future__ import annotations

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.errors import NetlistError
from circuits.measure import compare
from circuits.netlist import parse_netlist
from circuits.ngspice import ngspice_available

# ngspice 39's ddt is a difference quotient lagging about 1.5 steps (ptfuncs.c PTddt): its error is
# ~1.5 h / period of the swing, so the deck keeps ngspice's step at period / 1e4 (tstep 10n)
DDT_DECK = """ddt of an RC node, inside a nonlinear expression
V1 1 0 SIN(0 1 10k)
R1 1 2 1k
C1 2 0 10n
B1 3 0 v = 1e-4*ddt(v(2)) + 0.1*tanh(1e-4*ddt(v(2)))
R3 3 0 1k
B2 0 4 i = 1e-8*ddt(v(2)*v(2))
R4 4 0 1k
.tran 10n 40u
.end
"""


def test_ddt_is_an_internal_state_per_distinct_call():
    nl = parse_netlist(DDT_DECK)
    assert [fn for fn, _ in nl.element("b1").behavior[1].dynamic] == ["ddt"]  # one state, used twice
    assert len(nl.element("b2").behavior[1].dynamic) == 1


def test_idt_is_rejected_as_ngspice_rejects_it():
    with pytest.raises(NetlistError, match=r":3: bad expression 'idt\(v\(1\)\)': unknown function 'idt'"):
        parse_netlist("t\nV1 1 0 1\nB1 2 0 v=idt(v(1))\nR2 2 0 1\n")


@pytest.mark.slow  # ~17 s of CPU: 4000 steps with the B sources evaluated in torch
@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_ddt_matches_ngspice(tmp_path):
    path = tmp_path / "ddt.cir"
    path.write_text(DDT_DECK)
    circuit = load_circuit(path)
    ng = run_ngspice(circuit)
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    worst = compare(ng, ref)["worst"]
    assert worst < 1e-3
    # the derivative is really there: v(3) reaches ~1e-4 * 2 pi 10k * 0.85 V plus the tanh term
    assert float(ref["v(3)"].max()) > 0.5
