""".if/.elseif/.else/.endif: the branch ngspice takes, checked against ngspice's own waveforms, and
what ngspice reads before choosing branches rejected in one line."""

from __future__ import annotations

import pytest
import torch

from circuits import load_circuit, simulate
from circuits.errors import ConfigError
from circuits.measure import compare
from circuits.ngspice import ngspice_available
from tests.netlist_helpers import assert_rejected, parse_body

# which of four sources drives the RC depends on nested conditions; the resistor tells which ran
BRANCHES = """.param sel={sel} k=2 half={{k/4}}
.if (sel == 1)
V1 in 0 PULSE(0 1 1n 1n 1n 5n 20n)
.elseif (sel == 2)
V1 in 0 PULSE(0 2 1n 1n 1n 5n 20n)
.else
.if (half)
V1 in 0 PULSE(0 3 1n 1n 1n 5n 20n)
.else
V1 in 0 PULSE(0 4 1n 1n 1n 5n 20n)
.endif
.endif
R1 in out 1k
C1 out 0 2p
"""


def _sources(sel: float) -> list[str]:
    nl = parse_body(BRANCHES.format(sel=sel))
    return [f"{el.name}:{el.waveform.args[1].value():g}" for el in nl.elements if el.kind == "v"]


@pytest.mark.parametrize("sel,expected", [(1, "v1:1"), (2, "v1:2"), (3, "v1:3"), (0.5, "v1:1")])
def test_the_branch_taken_is_the_first_true_one(sel, expected):
    """sel = 0.5: neither comparison holds, so the .else branch runs its nested .if (k/4 = 0.5: true)."""
    assert _sources(sel) == ([expected] if sel != 0.5 else ["v1:3"])


def test_a_nonzero_fraction_is_true_and_zero_is_false():
    """numparam prints the value as % 23.15e and atoi reads it: every finite non-zero value is true."""
    body = ".param a={a}\n.if (a)\nR1 1 0 1k\n.else\nR1 1 0 2k\n.endif\nV1 1 0 1\n"
    for a, r in [(0.3, 1e3), (-2e-9, 1e3), (0, 2e3)]:
        assert parse_body(body.format(a=a)).element("r1").value.value() == r


@pytest.mark.parametrize("body,line,what", [
    (".if (1)\n.param a=1\n.endif\n", 3, ".param inside .if"),
    (".if (0)\n.func f(x) x\n.endif\n", 3, ".func inside .if"),
    (".subckt s a\n.if (1)\nR1 a 0 1\n.endif\n.ends\n", 3, ".if inside .subckt"),
    (".if (b)\nR1 1 0 1\n.endif\n", 2, "undefined parameter 'b'"),
    (".if 1\nR1 1 0 1\n.endif\n", 2, "condition in parentheses"),
    (".if (1)\nR1 1 0 1\n", 2, "unterminated .if"),
    (".endif\n", 2, ".endif without .if"),
    (".if (1)\n.else\n.elseif (1)\n.endif\n", 4, ".elseif after .else"),
])
def test_what_ngspice_reads_before_choosing_branches_is_rejected(body, line, what):
    assert_rejected(body, line, what)


def test_a_parameter_that_decides_a_branch_cannot_be_overridden(tmp_path):
    path = tmp_path / "if.cir"
    path.write_text("if\n" + BRANCHES.format(sel=2) + ".param r=1k\n.tran 0.1n 20n\n.end\n")
    circuit = load_circuit(path)
    assert {"sel"} <= circuit.netlist.fixed_params and "r" not in circuit.netlist.fixed_params
    with pytest.raises(ConfigError, match="'sel' decides a .if branch"):
        simulate(circuit, {"sel": 1})


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
@pytest.mark.parametrize("sel", [1, 2, 3])
def test_branches_match_ngspice(tmp_path, sel):
    """ngspice runs the deck as written (its own .if handling), not our flattened netlist."""
    from tests.test_corpus import cc

    path = tmp_path / "if.cir"
    path.write_text("if\n" + BRANCHES.format(sel=sel) + ".tran 0.1n 20n\n.end\n")
    circuit = load_circuit(path)
    ng = cc.run_ngspice_deck(path)
    ours = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    assert float(ng["v(in)"].max()) == pytest.approx({1: 1, 2: 2, 3: 3}[sel])
    assert compare(ng, ours)["worst"] < 1e-3
