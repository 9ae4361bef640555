"""Fuzz tests: malformed netlists must only ever raise NetlistError, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuits.errors import NetlistError
from circuits.expr import Expr
from circuits.netlist import Netlist, parse_netlist
from tests.test_netlist import RING as BASE_RING

# the ring oscillator of test_netlist plus a B source, a PULSE and a PWL source
RING = BASE_RING.replace(".ic v(n1)", """B1 nb 0 V={v(n1, n2) * 2 + time}
VP np 0 PULSE(0 1 0.2n 10p 10p 4n 10n)
VW nw 0 PWL(0 0 1n 0 1.1n 2.5)
.ic v(n1)""")

_EMPTY_DIR = Path(tempfile.mkdtemp(prefix="netlist_fuzz_"))
_TOKENS = sorted({t for line in RING.splitlines() for t in line.split()}
                 | {"=", "(", ")", "{", "}", "'", ",", "+", ";", "$", "*", ".subckt", ".ends", ".param",
                    ".include", ".end", "params:", "x1", "0", "gnd", "sin(0", "pwl(", "dc", "ac", "1e999",
                    "-", "v(", "max(1)", "{1/0}", ".tran", ".ic", "inv", "nch", "lk", "N1"})
_CHARS = "abcdefgmnpuvxABCDEFX0123456789 .=(){}',+-*/^;$:\t\n"
_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_netlist_error(text: str) -> None:
    """Parse ``text``; success or NetlistError are both fine, anything else fails the test."""
    try:
        nl = parse_netlist(text, file="fuzz.sp", base_dir=_EMPTY_DIR)
    except NetlistError as exc:
        assert str(exc).startswith("fuzz.sp"), str(exc)
        assert "\n" not in str(exc)
        return
    assert isinstance(nl, Netlist) and nl.elements
    nl.resolve_params()


def test_ring_parses() -> None:
    nl = parse_netlist(RING)
    assert len(nl.elements) == 19


@_FUZZ
@given(st.text(alphabet=_CHARS, max_size=300))
def test_random_text(text: str) -> None:
    parse_or_netlist_error(text)


@_FUZZ
@given(st.lists(st.lists(st.sampled_from(_TOKENS), max_size=8).map(" ".join), max_size=12))
def test_random_token_lines(lines: list[str]) -> None:
    parse_or_netlist_error("title\n" + "\n".join(lines))


_TOKEN_EDIT = st.tuples(st.sampled_from(["delete", "duplicate", "replace"]), st.integers(0, 10_000),
                        st.sampled_from(_TOKENS))
_CHAR_EDIT = st.tuples(st.sampled_from(["delete", "duplicate", "replace"]), st.integers(0, 10_000),
                       st.sampled_from(_CHARS))


def _edit(items: list[str], op: str, index: int, new: str) -> list[str]:
    """Delete, duplicate or replace one item of ``items``."""
    if not items:
        return [new]
    i = index % len(items)
    if op == "delete":
        return items[:i] + items[i + 1:]
    if op == "duplicate":
        return items[:i + 1] + items[i:]
    return items[:i] + [new] + items[i + 1:]


@_FUZZ
@given(st.lists(_TOKEN_EDIT, min_size=1, max_size=4))
def test_token_mutations_of_ring(edits: list[tuple[str, int, str]]) -> None:
    lines = [line.split(" ") for line in RING.splitlines()]
    for op, index, new in edits:
        row = lines[index % len(lines)]
        lines[index % len(lines)] = _edit(row, op, index // len(lines), new)
    parse_or_netlist_error("\n".join(" ".join(row) for row in lines))


@_FUZZ
@given(st.lists(_CHAR_EDIT, min_size=1, max_size=6))
def test_character_mutations_of_ring(edits: list[tuple[str, int, str]]) -> None:
    chars = list(RING)
    for op, index, new in edits:
        chars = _edit(chars, op, index, new)
    parse_or_netlist_error("".join(chars))


@_FUZZ
@given(st.text(alphabet="0123456789.eEkKmMgGuUnpfx+-*/^(),abv_ tq", max_size=40))
def test_random_expressions(text: str) -> None:
    try:
        e = Expr.parse(text)
    except NetlistError:
        return
    env = {n: 1.5 for n in e.names}
    e.evaluate(env, v=lambda a, b: 0.5, time=1.0)
    again = Expr.parse(e.to_text(env))
    assert again.is_constant or again.nodes or again.uses_time
