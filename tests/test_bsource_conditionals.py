"""ngspice's conditional and logical expression operators (`c ? a : b`, `< > <= >= == != <>`,
`&& || !`) in B sources and `.param`: precedence and values as ngspice's B-source grammar gives them
(src/spicelib/parser/inpptree-parser.y), zero derivative through a comparison, and a transient
against ngspice."""

from __future__ import annotations

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.errors import NetlistError
from circuits.expr import Expr
from circuits.measure import compare
from circuits.netlist import parse_netlist
from circuits.ngspice import ngspice_available

needs_ngspice = pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")


@pytest.mark.parametrize("text,value", [
    ("1 < 2", 1.0), ("2 < 1", 0.0), ("2 <= 2", 1.0), ("1 >= 2", 0.0), ("3 > 2", 1.0),
    ("1+1 == 2", 1.0), ("1 != 1", 0.0), ("1 <> 2", 1.0),
    ("1 ? 2 : 3", 2.0), ("0 ? 2 : 3", 3.0), ("-0.5 ? 2 : 3", 2.0),
    ("0 ? 1 : 0 ? 5 : 6", 6.0),        # right associative
    ("1 ? 0 ? 7 : 8 : 9", 8.0),
    ("1 ? 2 : 3 + 4", 2.0),            # ?: is the loosest
    ("!0", 1.0), ("!2", 0.0), ("!0 + 1", 2.0),  # ! binds like unary minus
    ("-2^2", -4.0),
    ("1 && 0 || 1", 1.0), ("0 || 1 && 0", 0.0),  # && binds tighter than ||
    ("2 && -3", 1.0), ("0 || 0", 0.0),
    ("3 > 2 > 1", 0.0), ("1 < 2 < 3", 1.0),  # left associative, 1.0/0.0 results
    ("2 > 1 == 1", 1.0),              # == is looser than >
    ("1 == 1 > 0", 1.0),
    ("1 + 2 > 2", 1.0),               # arithmetic is tighter than comparison
    ("max(1 < 2, 0.5)", 1.0), ("(1 > 2) * 5 + 1", 1.0),
])
def test_operator_values_and_precedence_as_ngspice(text, value):
    assert Expr.parse(text).value() == value


def test_tensor_condition_picks_per_element_and_passes_the_chosen_branch_gradient():
    x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    y = Expr.parse("a > 0.5 ? a*a : 3*a").evaluate({"a": x})
    assert y.dtype == torch.float64
    assert y.tolist() == [0.0, 1.0, 4.0]
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.tolist() == [3.0, 2.0, 4.0]
    # a comparison is piecewise constant: zero derivative, 1.0/0.0 in the operand's dtype
    z = Expr.parse("(a >= 1 && !(a == 2)) * a").evaluate({"a": x})
    assert z.tolist() == [0.0, 1.0, 0.0]
    (g,) = torch.autograd.grad(z.sum(), x)
    assert g.tolist() == [0.0, 1.0, 0.0]


def test_b_source_and_param_cards_read_the_operators():
    nl = parse_netlist("t\nV1 1 0 1\nB1 2 0 V = v(1) >= 0.5 ? 1 : v(1)<=-0.5 ? -1 : 0\n"
                       "B2 3 0 I={V(1) > 0.2 && v(1)!=1 ? 5 : 0}\nB3 4 0 v=v(1)==0 ? 1 : 0\n"
                       ".param p={2 > 1 ? 3 : 4} q='!(p<>3)'\nR1 2 0 {p}\nR2 3 0 {q}\n")
    volt = {"1": 0.7, "0": 0.0}
    values = [nl.element(n).behavior[1].evaluate({}, v=lambda a, b: volt[a] - volt[b])
              for n in ("b1", "b2", "b3")]
    assert values == [1.0, 5.0, 0.0]
    assert nl.resolve_params() == {"p": 3.0, "q": 1.0}


@pytest.mark.parametrize("text,match", [
    ("1 ? 2", "expected ':'"), ("1 ? 2 : ", "unexpected end"), ("1 < ", "unexpected end"),
    ("a = b", "unexpected character '='"), ("1 && && 2", "unexpected '&&'"), ("1 : 2", "unexpected ':'"),
])
def test_malformed_conditionals_are_one_line_errors(text, match):
    with pytest.raises(NetlistError, match=match) as info:
        Expr.parse(text, "deck.cir", 7)
    assert "deck.cir:7" in str(info.value) and "\n" not in str(info.value)


DECK = """conditional B sources
V1 in 0 sin(0 1 1k)
* ideal rectifier and clipper: continuous, piecewise
B1 rect 0 V = v(in) > 0 ? v(in) : 0
B2 clip 0 V={v(in) >= 0.5 ? 0.5 : v(in) <= -0.5 ? -0.5 : v(in)}
* logic: a window comparator and its complement, or and not, as currents into an RC
B3 0 wf I={(v(in) > -0.3 && v(in) < 0.3) ? 1m : 0}
R3 wf 0 1k
C3 wf 0 100n
B4 0 of I={!(v(in) > -0.3 && v(in) < 0.3) || v(in) == 2 ? 1m : 0}
R4 of 0 1k
C4 of 0 100n
B5 x 0 I={v(in) != 0 ? -1m*v(in)*(v(in) <> 0) : 0}
R5 x 0 1k
.tran 1u 3m
.end
"""


@needs_ngspice
def test_conditional_b_sources_match_ngspice(tmp_path):
    path = tmp_path / "deck.cir"
    path.write_text(DECK)
    circuit = load_circuit(path)
    # ngspice has no breakpoint where a comparison flips: with the bridge's default reltol=1e-7 it
    # stops ("timestep too small") at the first current step; 1e-6 resolves it (measured: its own
    # defaults, reltol=1e-3, are 1.03e-3 away from this)
    ng = run_ngspice(circuit, options={"reltol": 1e-6, "abstol": 1e-12, "vntol": 1e-9})
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    err = compare(ng, ref)
    assert err["worst"] <= 1e-3, err
    assert err["v(wf)"] > 0 and ref["v(wf)"].max() > 0.3  # the comparator switched


def test_forward_differences_see_a_comparison_as_constant():
    """Inside `frozen_comparisons` the outcome at the first point is kept: a perturbation across
    the threshold gives the chosen branch's derivative (ngspice: d(a > b) = 0), not a jump."""
    e = Expr.parse("v(a) > 2.5 ? 5 + v(a) : 0")
    at = lambda x: e.evaluate({}, v=lambda a, b: torch.tensor([x], dtype=torch.float64))
    x, h = 2.5 - 1e-9, 1e-7
    assert ((at(x + h) - at(x)) / h).item() > 1e7            # plain: the jump
    with Expr.frozen_comparisons():
        base = at(x)
        assert ((at(x + h) - base) / h).item() == 0.0         # frozen: the 0 branch
    with Expr.frozen_comparisons():
        base = at(2.6)
        assert ((at(2.6 - 0.2) - base) / -0.2).item() == pytest.approx(1.0)
