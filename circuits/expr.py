"""Arithmetic expressions in netlist values, parsed once and evaluated with torch.

`Expr` holds a small syntax tree.  Evaluation uses torch operations as soon as any operand is a
tensor (so parameters may be batched tensors and gradients flow through them) and plain floats
otherwise.  The grammar is the SPICE subset used by `.param`, `{...}` values and B sources:

    numbers with SI suffixes (``10p``, ``1meg``, ``2.5ns``), parameter names, ``+ - * /``, unary
    ``+ -``, power ``**`` / ``^`` (right associative), parentheses, the functions below, node
    voltages ``v(a)`` / ``v(a,b)`` and the simulation time ``time``; comparisons ``< > <= >= == !=``
    (``<>`` is ``!=``), logical ``&& || !`` and the conditional ``c ? a : b``.

Precedence and semantics are ngspice's B-source grammar (src/spicelib/parser/inpptree-parser.y),
loosest first: ``?:`` (right associative), ``||``, ``&&``, ``== !=``, ``< > <= >=``, ``+ -``,
``* /``, unary ``- + !``, ``^``.  ``a OP b`` is ``(a - b) OP 0`` giving 1.0 or 0.0; ``a && b`` is
``(a != 0) and (b != 0)``, ``a || b`` likewise, ``!a`` is ``a == 0``; ``c ? a : b`` picks ``a`` where
``c != 0`` (both sides are evaluated: ``torch.where``).  A comparison is piecewise constant, so its
derivative is zero; the conditional passes the derivative of the branch it picks.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Iterator, Union

import numpy as np
import torch
from torch import Tensor

from circuits.errors import NetlistError

__all__ = ["Expr", "Value", "parse_number", "user_functions", "DYNAMIC_FUNCTIONS"]

Value = Union[Tensor, float]
VoltageFn = Callable[[str, str], Tensor]

_MAX_DEPTH = 400        # deepest syntax tree accepted (keeps every recursive walk far from the limit)
_MAX_NESTING = 60       # deepest parenthesis / unary nesting accepted by the parser

# "µ" (U+00B5, the micro sign): ngspice reads it as "u" (measured: 2µ is 2e-6 in ngspice 39)
_SCALE = {"t": "1e12", "g": "1e9", "k": "1e3", "m": "1e-3", "u": "1e-6", "\u00b5": "1e-6", "n": "1e-9",
          "p": "1e-12", "f": "1e-15"}

_NUMBER_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TOKEN_RE = re.compile(
    r"(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(?P<unit>[A-Za-z\u00b5]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op>\*\*|&&|\|\||==|!=|<>|<=|>=|[-+*/^(),<>!?:])"
)
_VREF_RE = re.compile(r"\s*\(([^()]*)\)")


def _unit_scale(unit: str) -> str:
    """Decimal scale factor of a SPICE suffix such as ``meg``, ``p``, ``pF``, ``ns`` (unknown: 1)."""
    unit = unit.lower()
    if unit.startswith("meg"):
        return "1e6"
    if unit.startswith("mil"):
        return "25.4e-6"
    return _SCALE.get(unit[:1], "1")


def parse_number(text: str) -> float | None:
    """Value of a SPICE number with optional suffix/units (``10pF`` -> 1e-11), or None."""
    m = re.fullmatch(r"(" + _NUMBER_RE.pattern + r")([A-Za-z\u00b5]*)", text.strip())
    return None if m is None else _number(m.group(1), m.group(2))


def _number(digits: str, unit: str) -> float:
    """Correctly rounded value of ``digits`` scaled by the suffix ``unit``."""
    try:
        return float(Decimal(digits) * Decimal(_unit_scale(unit)))
    except ArithmeticError:  # exponent beyond Decimal's range: plain float arithmetic is fine there
        return float(digits) * float(_unit_scale(unit))


# ----------------------------------------------------------------------------------------------
# numeric helpers: torch when any operand is a tensor, IEEE floats (via numpy, no exceptions) else


def _apply(np_fn: Callable, torch_fn: Callable, *args: Value) -> Value:
    """Apply a numpy/torch function pair to the arguments, choosing torch if any is a tensor."""
    ref = next((a for a in args if isinstance(a, Tensor)), None)
    if ref is not None:
        dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
        return torch_fn(*(a if isinstance(a, Tensor) else torch.as_tensor(a, dtype=dtype, device=ref.device)
                          for a in args))
    with np.errstate(all="ignore"):
        return float(np_fn(*(np.float64(a) for a in args)))


_BINARY = {
    "+": (np.add, torch.add),
    "-": (np.subtract, torch.sub),
    "*": (np.multiply, torch.mul),
    "/": (np.divide, torch.div),
    "^": (np.power, torch.pow),
}

# comparisons of (a - b) with zero, as ngspice's B sources compute them (ptfuncs.c PTgt0 ...)
_COMPARE: dict[str, Callable] = {
    "<": lambda d: d < 0, ">": lambda d: d > 0, "<=": lambda d: d <= 0, ">=": lambda d: d >= 0,
    "==": lambda d: d == 0, "!=": lambda d: d != 0,
}


def _indicator(x: Value, *like: Value) -> Value:
    """A boolean tensor as 1.0/0.0 (no gradient) in the dtype of the first floating tensor of
    ``like`` (else the default dtype); a bool as a float."""
    if isinstance(x, Tensor):
        ref = next((y for y in like if isinstance(y, Tensor) and y.is_floating_point()), None)
        return x.to(ref.dtype if ref is not None else torch.get_default_dtype())
    return 1.0 if x else 0.0


def _truth(x: Value, test: Callable) -> Value:
    """``test`` applied to a value (tensor or float), as a boolean tensor or a Python bool."""
    if isinstance(x, Tensor):
        return test(x)
    with np.errstate(all="ignore"):
        return bool(test(np.float64(x)))

# name -> (arity, numpy function, torch function); arity (lo, hi): a range.  min/max of one
# argument is that argument (ngspice's .param evaluator accepts it: max(3) = 3, measured)
_FUNCTIONS: dict[str, tuple[int | tuple[int, int], Callable, Callable]] = {
    "sqrt": (1, np.sqrt, torch.sqrt),
    "exp": (1, np.exp, torch.exp),
    "log": (1, np.log, torch.log),
    "ln": (1, np.log, torch.log),
    "abs": (1, np.abs, torch.abs),
    "tanh": (1, np.tanh, torch.tanh),
    "sin": (1, np.sin, torch.sin),
    "cos": (1, np.cos, torch.cos),
    "min": ((1, 2), np.minimum, torch.minimum),
    "max": ((1, 2), np.maximum, torch.maximum),
    "pow": (2, np.power, torch.pow),
}


# B-source operators on the time history: ddt(x), the time derivative.  Its value is not a function
# of the argument: the device holding the expression gives it (see `Expr.dynamic`); the DAE makes
# each call an internal state.  (ngspice's B sources have no idt(): "no such function", measured.)
DYNAMIC_FUNCTIONS: dict[str, tuple[int, int]] = {"ddt": (1, 1)}

# While set (see `Expr.frozen_comparisons`): id(comparison node) -> its outcome.  The first
# evaluation records each outcome, later ones reuse it, so forward differences see the zero derivative
# ngspice gives a comparison (PTdifferentiate) instead of a jump where the perturbation crosses it.
_FROZEN: ContextVar[dict[int, Value] | None] = ContextVar("frozen_comparisons", default=None)


def _frozen(node: "_Node", compute: Callable[[], Value]) -> Value:
    """``compute()``, or the outcome recorded for ``node`` inside `Expr.frozen_comparisons`."""
    memo = _FROZEN.get()
    if memo is None:
        return compute()
    key = id(node)
    if key not in memo:
        memo[key] = compute()
    return memo[key]


# `.func` definitions visible to the parser: name -> (argument names, body tree)
_USER_FUNCTIONS: ContextVar[Mapping[str, tuple[tuple[str, ...], "_Node"]]] = ContextVar("user_functions", default={})


@contextmanager
def user_functions(defs: Mapping[str, tuple[tuple[str, ...], "Expr"]]) -> Iterator[None]:
    """Within the block, `Expr.parse` expands calls of these `.func` functions (name -> (argument
    names, body)) by substituting the arguments into the body."""
    token = _USER_FUNCTIONS.set({k: (args, body._root) for k, (args, body) in defs.items()})
    try:
        yield
    finally:
        _USER_FUNCTIONS.reset(token)


def _fmt(x: float) -> str:
    """A float as full-precision SPICE text; negative values are parenthesised."""
    s = repr(float(x))
    return f"({s})" if s.startswith("-") else s


# ----------------------------------------------------------------------------------------------
# syntax tree


@dataclass(frozen=True)
class _Ctx:
    """Everything a node needs while being evaluated."""

    env: Mapping[str, Value]
    v: VoltageFn | None
    time: Value | None
    dynamic: Mapping["_Node", Value] | None = None  # values of ddt() calls


@dataclass(frozen=True)
class _Node:
    depth: int = field(default=1, compare=False, kw_only=True)

    def ev(self, ctx: _Ctx) -> Value:
        raise NotImplementedError

    def ren(self, names: Mapping[str, str], nodes: Mapping[str, str]) -> _Node:
        return self

    def txt(self, params: Mapping[str, Value] | None, node_name: Callable[[str], str]) -> str:
        raise NotImplementedError

    def children(self) -> tuple[_Node, ...]:
        return ()


@dataclass(frozen=True)
class _Num(_Node):
    value: float

    def ev(self, ctx: _Ctx) -> Value:
        return self.value

    def txt(self, params, node_name) -> str:
        return _fmt(self.value)


@dataclass(frozen=True)
class _Name(_Node):
    name: str

    def ev(self, ctx: _Ctx) -> Value:
        x = ctx.env[self.name]
        return x if isinstance(x, Tensor) else float(x)

    def ren(self, names, nodes) -> _Node:
        return _Name(names.get(self.name, self.name))

    def txt(self, params, node_name) -> str:
        return self.name if params is None else _fmt(float(params[self.name]))


@dataclass(frozen=True)
class _Time(_Node):
    def ev(self, ctx: _Ctx) -> Value:
        if ctx.time is None:
            raise ValueError("expression uses 'time' but no time was given")
        return ctx.time

    def txt(self, params, node_name) -> str:
        return "time"


@dataclass(frozen=True)
class _Volt(_Node):
    a: str
    b: str

    def ev(self, ctx: _Ctx) -> Value:
        if ctx.v is None:
            raise ValueError("expression uses node voltages but no voltage function was given")
        return ctx.v(self.a, self.b)

    def ren(self, names, nodes) -> _Node:
        return _Volt(nodes.get(self.a, self.a), nodes.get(self.b, self.b))

    def txt(self, params, node_name) -> str:
        a = node_name(self.a)
        return f"v({a})" if self.b == "0" else f"v({a},{node_name(self.b)})"


@dataclass(frozen=True)
class _Neg(_Node):
    x: _Node

    def ev(self, ctx: _Ctx) -> Value:
        x = self.x.ev(ctx)
        return -x if isinstance(x, Tensor) else -float(x)

    def ren(self, names, nodes) -> _Node:
        return _Neg(self.x.ren(names, nodes), depth=self.depth)

    def txt(self, params, node_name) -> str:
        return f"(-{self.x.txt(params, node_name)})"

    def children(self) -> tuple[_Node, ...]:
        return (self.x,)


@dataclass(frozen=True)
class _Bin(_Node):
    op: str
    a: _Node
    b: _Node

    def ev(self, ctx: _Ctx) -> Value:
        np_fn, torch_fn = _BINARY[self.op]
        return _apply(np_fn, torch_fn, self.a.ev(ctx), self.b.ev(ctx))

    def ren(self, names, nodes) -> _Node:
        return _Bin(self.op, self.a.ren(names, nodes), self.b.ren(names, nodes), depth=self.depth)

    def txt(self, params, node_name) -> str:
        a, b = self.a.txt(params, node_name), self.b.txt(params, node_name)
        return f"pow({a},{b})" if self.op == "^" else f"({a}{self.op}{b})"

    def children(self) -> tuple[_Node, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class _Cmp(_Node):
    """``a op b`` for a comparison or a logical operator: 1.0 where true, 0.0 where false."""

    op: str
    a: _Node
    b: _Node

    def ev(self, ctx: _Ctx) -> Value:
        return _frozen(self, lambda: self._ev(ctx))

    def _ev(self, ctx: _Ctx) -> Value:
        a, b = self.a.ev(ctx), self.b.ev(ctx)
        if self.op in ("&&", "||"):
            ta, tb = _truth(a, lambda x: x != 0), _truth(b, lambda x: x != 0)
            if isinstance(ta, Tensor) or isinstance(tb, Tensor):
                ta, tb = torch.as_tensor(ta), torch.as_tensor(tb)
                return _indicator(ta & tb if self.op == "&&" else ta | tb, a, b)
            return _indicator(ta and tb if self.op == "&&" else ta or tb)
        d = _apply(np.subtract, torch.sub, a, b)
        return _indicator(_truth(d, _COMPARE[self.op]), d)

    def ren(self, names, nodes) -> _Node:
        return _Cmp(self.op, self.a.ren(names, nodes), self.b.ren(names, nodes), depth=self.depth)

    def txt(self, params, node_name) -> str:
        return f"({self.a.txt(params, node_name)}{self.op}{self.b.txt(params, node_name)})"

    def children(self) -> tuple[_Node, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class _Not(_Node):
    """``!x``: 1.0 where x == 0, else 0.0."""

    x: _Node

    def ev(self, ctx: _Ctx) -> Value:
        def compute() -> Value:
            x = self.x.ev(ctx)
            return _indicator(_truth(x, lambda y: y == 0), x)
        return _frozen(self, compute)

    def ren(self, names, nodes) -> _Node:
        return _Not(self.x.ren(names, nodes), depth=self.depth)

    def txt(self, params, node_name) -> str:
        return f"(!{self.x.txt(params, node_name)})"

    def children(self) -> tuple[_Node, ...]:
        return (self.x,)


@dataclass(frozen=True)
class _Cond(_Node):
    """``c ? a : b``: a where c != 0, else b (a tensor condition: both sides, `torch.where`)."""

    c: _Node
    a: _Node
    b: _Node

    def ev(self, ctx: _Ctx) -> Value:
        c = _frozen(self, lambda: _truth(self.c.ev(ctx), lambda x: x != 0))
        if not isinstance(c, Tensor):  # a scalar condition: only the chosen side is evaluated
            return (self.a if c else self.b).ev(ctx)
        a, b = self.a.ev(ctx), self.b.ev(ctx)
        ref = next((x for x in (a, b) if isinstance(x, Tensor) and x.is_floating_point()), None)
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        a, b = (torch.as_tensor(x, dtype=dtype, device=c.device) for x in (a, b))
        return torch.where(c, a, b)

    def ren(self, names, nodes) -> _Node:
        return _Cond(self.c.ren(names, nodes), self.a.ren(names, nodes), self.b.ren(names, nodes),
                     depth=self.depth)

    def txt(self, params, node_name) -> str:
        c, a, b = (x.txt(params, node_name) for x in (self.c, self.a, self.b))
        return f"({c}?{a}:{b})"

    def children(self) -> tuple[_Node, ...]:
        return (self.c, self.a, self.b)


@dataclass(frozen=True)
class _Call(_Node):
    fn: str
    args: tuple[_Node, ...]

    def ev(self, ctx: _Ctx) -> Value:
        if self.fn in DYNAMIC_FUNCTIONS:
            if ctx.dynamic is None:
                raise ValueError(f"{self.fn}() needs the device's state (only B sources have it)")
            return ctx.dynamic[self]
        _, np_fn, torch_fn = _FUNCTIONS[self.fn]
        if len(self.args) == 1 and self.fn in ("min", "max"):
            return self.args[0].ev(ctx)
        return _apply(np_fn, torch_fn, *(a.ev(ctx) for a in self.args))

    def ren(self, names, nodes) -> _Node:
        return _Call(self.fn, tuple(a.ren(names, nodes) for a in self.args), depth=self.depth)

    def txt(self, params, node_name) -> str:
        fn = "ln" if self.fn == "log" else self.fn
        return f"{fn}({','.join(a.txt(params, node_name) for a in self.args)})"

    def children(self) -> tuple[_Node, ...]:
        return self.args


# ----------------------------------------------------------------------------------------------
# tokenizer and recursive-descent parser


@dataclass(frozen=True)
class _Tok:
    kind: str          # "num", "name", "op", "vref", "end"
    text: str
    pos: int
    value: float = 0.0
    nodes: tuple[str, str] = ("", "")


class _Parser:
    """Recursive-descent parser producing a `_Node` tree; errors are `NetlistError`s."""

    def __init__(self, text: str, file: str, line: int):
        self.text, self.file, self.line = text, file, line
        self.nesting = 0
        self.toks = self._tokenize()
        self.i = 0

    def fail(self, reason: str) -> NetlistError:
        shown = " ".join(self.text.split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return NetlistError(f"bad expression '{shown}': {reason}", self.file, self.line)

    def _tokenize(self) -> list[_Tok]:
        text, toks, pos = self.text, [], 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                toks.append(_Tok("end", "", pos))
                return toks
            m = _TOKEN_RE.match(text, pos)
            if m is None:
                raise self.fail(f"unexpected character '{text[pos]}'")
            if m.group("num") is not None:
                value = _number(m.group("num"), m.group("unit"))
                if not math.isfinite(value):  # 1E310 overflows to inf, which prints as a name
                    raise self.fail(f"number '{m.group(0)}' is out of range")
                toks.append(_Tok("num", m.group(0), pos, value=value))
            elif m.group("name") is not None and m.group("name").lower() == "v" and _VREF_RE.match(text, m.end()):
                ref = _VREF_RE.match(text, m.end())
                toks.append(_Tok("vref", text[pos:ref.end()], pos, nodes=self._vref_nodes(ref.group(1))))
                pos = ref.end()
                continue
            elif m.group("name") is not None:
                toks.append(_Tok("name", m.group(0).lower(), pos))
            else:
                toks.append(_Tok("op", m.group(0), pos))
            pos = m.end()

    def _vref_nodes(self, inner: str) -> tuple[str, str]:
        parts = [p.strip().lower() for p in inner.split(",")]
        if not 1 <= len(parts) <= 2 or any(not p or any(c.isspace() for c in p) for p in parts):
            raise self.fail(f"bad node voltage reference 'v({inner})'")
        return (parts[0], parts[1] if len(parts) == 2 else "0")

    # -- token helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def accept(self, *ops: str) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ops:
            self.i += 1
            return tok.text
        return None

    def expect(self, op: str) -> None:
        if self.accept(op) is None:
            raise self.fail(f"expected '{op}' but found {self.describe(self.peek())}")

    @staticmethod
    def describe(tok: _Tok) -> str:
        return "end of expression" if tok.kind == "end" else f"'{tok.text}'"

    def build(self, node: _Node, *kids: _Node) -> _Node:
        depth = 1 + max((k.depth for k in kids), default=0)
        if depth > _MAX_DEPTH:
            raise self.fail("expression is too deeply nested")
        object.__setattr__(node, "depth", depth)
        return node

    def nest(self) -> None:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise self.fail("expression is too deeply nested")

    # -- grammar
    def parse(self) -> _Node:
        if self.peek().kind == "end":
            raise self.fail("empty expression")
        node = self.expression()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {self.describe(self.peek())}")
        return node

    def expression(self) -> _Node:
        """``c ? a : b`` (right associative, loosest) over the logical/comparison levels."""
        cond = self.binary(0)
        if self.accept("?") is None:
            return cond
        self.nest()
        a = self.expression()
        self.expect(":")
        b = self.expression()
        self.nesting -= 1
        return self.build(_Cond(cond, a, b), cond, a, b)

    # left-associative levels below the conditional, loosest first (ngspice's B-source grammar)
    _LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("==", "!=", "<>"), ("<", ">", "<=", ">="))

    def binary(self, level: int) -> _Node:
        if level == len(self._LEVELS):
            return self.additive()
        node = self.binary(level + 1)
        while (op := self.accept(*self._LEVELS[level])) is not None:
            rhs = self.binary(level + 1)
            node = self.build(_Cmp("!=" if op == "<>" else op, node, rhs), node, rhs)
        return node

    def additive(self) -> _Node:
        node = self.multiplicative()
        while (op := self.accept("+", "-")) is not None:
            rhs = self.multiplicative()
            node = self.build(_Bin(op, node, rhs), node, rhs)
        return node

    def multiplicative(self) -> _Node:
        node = self.unary()
        while (op := self.accept("*", "/")) is not None:
            rhs = self.unary()
            node = self.build(_Bin(op, node, rhs), node, rhs)
        return node

    def unary(self) -> _Node:
        op = self.accept("+", "-", "!")
        if op is None:
            return self.power()
        self.nest()
        x = self.unary()
        self.nesting -= 1
        if op == "!":
            return self.build(_Not(x), x)
        return x if op == "+" else self.build(_Neg(x), x)

    def power(self) -> _Node:
        base = self.atom()
        if self.accept("**", "^") is None:
            return base
        self.nest()
        exponent = self.unary()
        self.nesting -= 1
        return self.build(_Bin("^", base, exponent), base, exponent)

    def atom(self) -> _Node:
        tok = self.take()
        if tok.kind == "num":
            return _Num(tok.value)
        if tok.kind == "vref":
            return _Volt(*tok.nodes)
        if tok.kind == "name":
            return self.name_or_call(tok)
        if tok.kind == "op" and tok.text == "(":
            self.nest()
            node = self.expression()
            self.expect(")")
            self.nesting -= 1
            return node
        raise self.fail(f"unexpected {self.describe(tok)}")

    def name_or_call(self, tok: _Tok) -> _Node:
        if self.accept("(") is None:
            return _Time() if tok.text == "time" else _Name(tok.text)
        user = _USER_FUNCTIONS.get().get(tok.text)
        if user is None and tok.text not in _FUNCTIONS and tok.text not in DYNAMIC_FUNCTIONS:
            raise self.fail(f"unknown function '{tok.text}'")
        self.nest()
        args = [self.expression()]
        while self.accept(","):
            args.append(self.expression())
        self.expect(")")
        self.nesting -= 1
        if user is not None:
            names, body = user
            if len(args) != len(names):
                raise self.fail(f"{tok.text}() takes {len(names)} argument(s), got {len(args)}")
            return self._substitute(body, dict(zip(names, args)))
        arity = DYNAMIC_FUNCTIONS.get(tok.text) or _FUNCTIONS[tok.text][0]
        lo, hi = arity if isinstance(arity, tuple) else (arity, arity)
        if not lo <= len(args) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise self.fail(f"{tok.text}() takes {want} argument{'s' if hi > 1 else ''}, got {len(args)}")
        return self.build(_Call(tok.text, tuple(args)), *args)

    def _substitute(self, node: _Node, args: Mapping[str, _Node]) -> _Node:
        """A `.func` body with its argument names replaced by the call's argument trees."""
        if isinstance(node, _Name):
            return args.get(node.name, node)
        if isinstance(node, _Neg):
            x = self._substitute(node.x, args)
            return self.build(_Neg(x), x)
        if isinstance(node, _Bin):
            a, b = self._substitute(node.a, args), self._substitute(node.b, args)
            return self.build(_Bin(node.op, a, b), a, b)
        if isinstance(node, _Call):
            kids = tuple(self._substitute(a, args) for a in node.args)
            return self.build(_Call(node.fn, kids), *kids)
        if isinstance(node, _Cmp):
            a, b = self._substitute(node.a, args), self._substitute(node.b, args)
            return self.build(_Cmp(node.op, a, b), a, b)
        if isinstance(node, _Not):
            x = self._substitute(node.x, args)
            return self.build(_Not(x), x)
        if isinstance(node, _Cond):
            c, a, b = (self._substitute(x, args) for x in (node.c, node.a, node.b))
            return self.build(_Cond(c, a, b), c, a, b)
        return node


def _walk(root: _Node) -> list[_Node]:
    """All nodes of a tree in pre-order (iterative)."""
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children()))
    return out


# ----------------------------------------------------------------------------------------------


class Expr:
    """A parsed arithmetic expression; see the module docstring for the grammar."""

    __slots__ = ("text", "_root", "names", "nodes", "uses_time", "dynamic", "has_comparisons")

    def __init__(self, root: _Node, text: str):
        self.text = text
        self._root = root
        nodes = _walk(root)
        self.names: frozenset[str] = frozenset(n.name for n in nodes if isinstance(n, _Name))
        self.nodes: tuple[tuple[str, str], ...] = tuple(
            dict.fromkeys((n.a, n.b) for n in nodes if isinstance(n, _Volt)))
        self.uses_time: bool = any(isinstance(n, _Time) for n in nodes)
        # the distinct ddt() calls, in order: (function name, call node)
        self.dynamic: tuple[tuple[str, _Node], ...] = tuple(dict.fromkeys(
            (n.fn, n) for n in nodes if isinstance(n, _Call) and n.fn in DYNAMIC_FUNCTIONS))
        self.has_comparisons: bool = any(isinstance(n, (_Cmp, _Not, _Cond)) for n in nodes)

    @classmethod
    def parse(cls, text: str, file: str = "<string>", line: int = 0) -> Expr:
        """Parse ``text``; raises `NetlistError` (at ``file:line``) on bad syntax."""
        return cls(_Parser(text, file, line).parse(), text.strip())

    @classmethod
    def const(cls, x: float) -> Expr:
        """A constant expression."""
        return cls(_Num(float(x)), repr(float(x)))

    @property
    def is_constant(self) -> bool:
        """True if the expression uses no parameters, node voltages or time."""
        return not (self.names or self.nodes or self.uses_time or self.dynamic)

    def value(self) -> float:
        """The value of a constant expression."""
        if not self.is_constant:
            raise ValueError(f"expression '{self.text}' is not constant")
        return float(self._root.ev(_Ctx({}, None, None)))

    def evaluate(self, env: Mapping[str, Value], v: VoltageFn | None = None,
                 time: Value | None = None, dynamic: Mapping[_Node, Value] | None = None) -> Value:
        """Evaluate with parameter values ``env``, node-voltage function ``v(a, b)``, ``time`` and
        the values of the ddt() calls (``dynamic``: call node of `Expr.dynamic` -> value)."""
        return self._root.ev(_Ctx(env, v, time, dynamic))

    def dynamic_arguments(self, env: Mapping[str, Value], v: VoltageFn | None = None,
                          time: Value | None = None, dynamic: Mapping[_Node, Value] | None = None
                          ) -> list[list[Value]]:
        """The arguments of each ddt() call of `dynamic`, evaluated like `evaluate`."""
        ctx = _Ctx(env, v, time, dynamic)
        return [[a.ev(ctx) for a in node.args] for _, node in self.dynamic]


    @staticmethod
    @contextmanager
    def frozen_comparisons() -> Iterator[None]:
        """Within the block, the first evaluation of each comparison, logical operator and
        conditional's condition fixes its outcome for every later evaluation (of any expression
        holding that node): forward differences then give the comparison's zero derivative."""
        token = _FROZEN.set({})
        try:
            yield
        finally:
            _FROZEN.reset(token)

    def rename(self, names: Mapping[str, str] = {}, nodes: Mapping[str, str] = {}) -> Expr:
        """A copy with parameter names and v() node names substituted."""
        root = self._root.ren(names, nodes)
        return self if root == self._root else Expr(root, root.txt(None, str))

    def to_text(self, params: Mapping[str, Value] | None = None,
                node_name: Callable[[str], str] | None = None) -> str:
        """Render in ngspice B-source syntax, parameters replaced by their values (if given)."""
        return self._root.txt(params, node_name or str)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and self._root == other._root

    def __hash__(self) -> int:
        return hash(self._root)

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"
