"""Tests of circuits.expr: parsing, evaluation (floats and batched torch tensors), rename, to_text."""

from __future__ import annotations

import math
import re

import pytest
import torch

from circuits.errors import NetlistError
from circuits.expr import Expr, parse_number


def ev(text: str, **env: float) -> float:
    """Evaluate ``text`` with plain-float parameters."""
    return Expr.parse(text).evaluate(env)


@pytest.mark.parametrize("text, value", [
    ("1", 1.0), (".5", 0.5), ("1e-12", 1e-12), ("1.5E3", 1500.0), ("10pF", 1e-11), ("1MEGohm", 1e6),
    ("2.5ns", 2.5e-9), ("1.8V", 1.8), ("3k", 3e3), ("4Meg", 4e6), ("2m", 2e-3), ("2mA", 2e-3),
    ("1mil", 25.4e-6), ("7u", 7e-6), ("1g", 1e9), ("2t", 2e12), ("10f", 1e-14), ("3n", 3e-9),
    ("1.e3", 1000.0), ("1e3k", 1e6), ("5x", 5.0),
])
def test_numbers_and_suffixes(text: str, value: float) -> None:
    assert ev(text) == pytest.approx(value, rel=1e-15)
    assert parse_number(text) == pytest.approx(value, rel=1e-15)


def test_suffix_values_are_correctly_rounded() -> None:
    assert ev("10f") == 1e-14
    assert ev("2.5n") == 2.5e-9
    assert parse_number("abc") is None


def test_number_beyond_float_range_is_a_clear_error() -> None:
    """1E310 overflows to inf, which would print back as the name 'inf' (found by the fuzz test)."""
    with pytest.raises(NetlistError, match=r"number '1E310' is out of range"):
        Expr.parse("1E310")
    assert Expr.parse("1E300").evaluate({}) == 1e300


@pytest.mark.parametrize("text, value", [
    ("1+2*3", 7.0), ("(1+2)*3", 9.0), ("8-3-2", 3.0), ("16/4/2", 2.0), ("2**3**2", 512.0),
    ("2^3^2", 512.0), ("-2**2", -4.0), ("2**-1", 0.5), ("-(-3)", 3.0), ("+3", 3.0), ("--2", 2.0),
    ("2*-3", -6.0), ("1 + 2 * (3 - 1) ^ 2 / 4", 3.0), ("(((1)))", 1.0),
])
def test_precedence(text: str, value: float) -> None:
    assert ev(text) == pytest.approx(value)


@pytest.mark.parametrize("text, value", [
    ("sqrt(16)", 4.0), ("exp(1)", math.e),
    ("ln(exp(2.5))", 2.5), ("log(100)", math.log(100.0)), ("abs(-3)", 3.0), ("min(2, 3)", 2.0),
    ("max(2,3)", 3.0), ("pow(2,10)", 1024.0), ("tanh(0.5)", math.tanh(0.5)), ("sin(1)", math.sin(1.0)),
    ("cos(1)", math.cos(1.0)), ("SQRT(4)", 2.0),
])
def test_functions(text: str, value: float) -> None:
    assert ev(text) == pytest.approx(value)


def test_float_evaluation_never_raises() -> None:
    assert ev("1/0") == math.inf
    assert math.isnan(ev("sqrt(-1)"))
    assert ev("exp(1000)") == math.inf
    assert ev("log(0)") == -math.inf
    assert math.isnan(ev("(-8)^0.5"))
    assert isinstance(ev("2*3"), float)


def test_names_nodes_time() -> None:
    e = Expr.parse("a*v(out) + v(1, n2)/x1.wp - time + b*V(out)")
    assert e.names == frozenset({"a", "b", "x1.wp"})
    assert e.nodes == (("out", "0"), ("1", "n2"))
    assert e.uses_time
    assert not e.is_constant
    got = e.evaluate({"a": 2.0, "b": 1.0, "x1.wp": 4.0}, v=lambda p, n: {"out": 1.0, "1": 8.0}[p], time=0.5)
    assert got == pytest.approx(2.0 + 2.0 - 0.5 + 1.0)
    c = Expr.parse("2*3k")
    assert c.is_constant and c.value() == 6000.0
    assert Expr.const(1.5e-14).value() == 1.5e-14
    with pytest.raises(ValueError):
        e.value()
    with pytest.raises(KeyError):
        Expr.parse("zz").evaluate({})


@pytest.mark.parametrize("text, reason", [
    ("", "empty expression"), ("1+", "unexpected end"), ("(1", "expected ')'"), ("1)", "unexpected ')'"),
    ("foo(1)", "unknown function 'foo'"), ("sqrt(1,2)", "takes 1 argument"), ("max(1,2,3)", "takes 1 to 2"),
    ("1 2", "unexpected '2'"), ("v()", "node voltage"), ("v(a,b,c)", "node voltage"), ("2 # 3", "'#'"),
    ("*3", "unexpected '*'"), ("(" * 100 + "1" + ")" * 100, "too deeply nested"),
    ("+".join(["1"] * 600), "too deeply nested"), ("-" * 200 + "1", "too deeply nested"),
])
def test_syntax_errors(text: str, reason: str) -> None:
    with pytest.raises(NetlistError, match=re.escape(reason)) as info:
        Expr.parse(text, "deck.sp", 7)
    assert str(info.value).startswith("deck.sp:7: ")
    assert "\n" not in str(info.value)


def test_torch_broadcast_and_mixing() -> None:
    a = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([[1.0], [2.0]])
    got = Expr.parse("max(a, b) + min(a, 2) * 2 + pow(a, 2) - b^2 + sqrt(a)").evaluate({"a": a, "b": b})
    want = torch.maximum(a, b) + torch.minimum(a, torch.tensor(2.0)) * 2 + a ** 2 - b ** 2 + a.sqrt()
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, want)
    f32 = Expr.parse("a*1.5 + max(a, 0)").evaluate({"a": torch.ones(2, dtype=torch.float32)})
    assert f32.dtype == torch.float32


def test_gradient_matches_analytic() -> None:
    a = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    y = Expr.parse("sqrt(a)*exp(-b*a) + ln(a)^2 + tanh(b) / a").evaluate({"a": a, "b": b})
    y.sum().backward()
    ad, bd = a.detach(), b.detach()
    da = (0.5 / ad.sqrt() - bd * ad.sqrt()) * torch.exp(-bd * ad) + 2 * ad.log() / ad - bd.tanh() / ad ** 2
    db = (-(ad ** 1.5) * torch.exp(-bd * ad)).sum() + ((1 - bd.tanh() ** 2) / ad).sum()
    torch.testing.assert_close(a.grad, da)
    torch.testing.assert_close(b.grad, db)


def test_voltage_function_with_tensors() -> None:
    volts = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5, 0.5])}
    e = Expr.parse("g * (v(a) - v(b)) + v(a, b)")
    got = e.evaluate({"g": 2.0}, v=lambda p, n: volts[p] - (volts[n] if n != "0" else 0))
    torch.testing.assert_close(got, torch.tensor([1.5, 4.5]))


def test_rename() -> None:
    e = Expr.parse("wp*2 + v(in, mid) + v(out) + time")
    r = e.rename({"wp": "x1.wp"}, {"in": "n5", "mid": "x1.mid"})
    assert r.names == frozenset({"x1.wp"})
    assert r.nodes == (("n5", "x1.mid"), ("out", "0"))
    assert r.uses_time
    assert r.evaluate({"x1.wp": 1.0}, v=lambda p, n: 0.0, time=1.0) == 3.0
    assert e.names == frozenset({"wp"})            # the original is untouched
    assert e.rename({}, {}) is e


@pytest.mark.parametrize("text", [
    "a*2 + b/3 - 1.5e-14", "a^b^0.5", "-a**2", "ln(a) + log(b) + exp(-a)", "max(a, b) - min(a, -b)",
    "pow(a, 3) + sqrt(abs(b)) * tanh(a) + sin(b) * cos(a)", "10p*a", "((a))-(-(b))",
    "v(x1.mid) * a - v(n1, 2) + time",
])
def test_to_text_round_trip(text: str) -> None:
    e = Expr.parse(text)
    env = {"a": 1.7, "b": -0.3 if "sqrt(abs" in text or "min" in text or "v(" in text else 0.6}
    volts = {("x1.mid", "0"): 0.7, ("n1", "2"): -0.2}

    def v(p: str, n: str) -> float:
        return volts[(p, n)]

    want = e.evaluate(env, v=v, time=2.0)
    substituted = Expr.parse(e.to_text(env))
    assert substituted.names == frozenset()
    assert substituted.evaluate({}, v=v, time=2.0) == pytest.approx(want, rel=1e-15)
    assert Expr.parse(e.to_text()).evaluate(env, v=v, time=2.0) == pytest.approx(want, rel=1e-15)


def test_to_text_ngspice_syntax() -> None:
    e = Expr.parse("c0 * v(in)^2 + log(v(a, b)) + time")
    text = e.to_text({"c0": 1.5e-14}, node_name=lambda n: n.upper())
    assert text == "(((1.5e-14*pow(v(IN),2.0))+ln(v(A,B)))+time)"
    assert "1.5e-14" in Expr.parse("k").to_text({"k": torch.tensor(1.5e-14, dtype=torch.float64)})
    assert Expr.parse("k").to_text({"k": -2.0}) == "(-2.0)"
