"""SPICE-subset netlist: plain data types and the parser that produces them.

The parser flattens `.subckt` hierarchies: every element in `Netlist.elements` is a leaf element with
hierarchical names (``x1.mp``) and node names (``x1.mid``; ground is always ``"0"``).  All numbers are
kept as `Expr` objects so that later stages can evaluate them with batched torch tensors of design
parameters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from circuits.alter import Alter, apply_alters, parse_alter
from circuits.conditionals import Branches, select_branches
from circuits.devices.urc import expand_urc_lines
from circuits.errors import NetlistError
from circuits.expr import Expr, Value, user_functions
from circuits.waveforms import ARITY, UNUSED_ARGS, check_args

if TYPE_CHECKING:
    from circuits.devices.base import Device

_LOG = logging.getLogger(__name__)

__all__ = [
    "NetlistError",
    "SourceLoc",
    "Waveform",
    "Element",
    "Model",
    "Tran",
    "Netlist",
    "parse_netlist",
    "parse_file",
]


@dataclass(frozen=True)
class SourceLoc:
    """Where a netlist item was written: file name (or ``<string>``) and 1-based line number."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Waveform:
    """An independent-source value: kind is ``dc``, ``pulse``, ``sin`` or ``pwl``.

    ``args`` are the positional arguments exactly as written in SPICE order (PWL: t1 v1 t2 v2 ...);
    ``dc`` is the DC value if one was given (``DC 1.8`` or a bare value), else None.
    """

    kind: str
    args: list[Expr] = field(default_factory=list)
    dc: Expr | None = None


@dataclass
class Element:
    """One flattened circuit element.

    kind: lower-case SPICE letter (``r c l v i e g b d m n``).
    name: lower-case hierarchical instance name, e.g. ``r1`` or ``x2.mn``.
    nodes: lower-case hierarchical node names in SPICE order; ground is ``"0"`` (``gnd`` maps to it).
    value: R/C/L resistance/capacitance/inductance, E/G gain; None otherwise.
    waveform: V/I sources only.
    model: lower-case model name for D, M, N.
    params: instance parameters (``w``, ``l``, ``tfe``, ``ic`` ...), lower-case keys.
    behavior: B sources only: ``("i", expr)`` or ``("v", expr)``; the expr may call ``v(a)``,
        ``v(a,b)`` with hierarchical node names, and use ``time``.
    controls: hierarchical names of the elements whose branch currents the element reads (K: two
        inductors, F/H: a voltage source).
    """

    kind: str
    name: str
    nodes: list[str]
    loc: SourceLoc
    value: Expr | None = None
    waveform: Waveform | None = None
    model: str | None = None
    params: dict[str, Expr] = field(default_factory=dict)
    behavior: tuple[str, Expr] | None = None
    controls: list[str] = field(default_factory=list)  # K: its two inductors; F, H: the controlling V


@dataclass
class Model:
    """A ``.model name type k=v ...`` card; ``type`` is lower-case (``nmos``, ``pmos``, ``d``, ``lk`` ...)."""

    name: str
    type: str
    params: dict[str, Expr]
    loc: SourceLoc


@dataclass
class Tran:
    """A ``.tran tstep tstop [tstart [tmax]] [uic]`` card."""

    tstep: float
    tstop: float
    tstart: float = 0.0
    tmax: float | None = None
    uic: bool = False


@dataclass
class Netlist:
    """A parsed, flattened netlist.

    params: every parameter in evaluation order (a parameter only refers to earlier ones): global
        ``.param`` lines first, then scoped subcircuit-instance parameters under mangled names
        (the parser rewrites expressions inside a subcircuit to refer to those names).
    ic: ``.ic v(node)=value`` entries, hierarchical node name -> Expr.
    options: the ``.options`` the reference honours (``reltol abstol vntol method maxord``).
    ignored: what was read but does not affect a transient (logged in one info line), each
        ``"what (line N)"``.
    """

    title: str
    elements: list[Element]
    models: dict[str, Model]
    params: dict[str, Expr]
    ic: dict[str, Expr]
    tran: Tran | None
    file: str
    options: dict[str, float | str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    fixed_params: set[str] = field(default_factory=set)  # decide .if branches or URC lumps: not overridable

    def element(self, name: str) -> Element:
        """Return the element called ``name`` (case-insensitive)."""
        for e in self.elements:
            if e.name == name.lower():
                return e
        raise KeyError(name)

    def resolve_params(self, overrides: Mapping[str, Value] | None = None) -> dict[str, Value]:
        """Evaluate every parameter in order; ``overrides`` replace global parameters' expressions."""
        overrides = dict(overrides or {})
        for name in overrides:
            if name not in self.params or "." in name:
                raise KeyError(name)
        env: dict[str, Value] = {}
        for name, expr in self.params.items():
            env[name] = overrides[name] if name in overrides else expr.evaluate(env)
        return env

    def nodes(self) -> list[str]:
        """All non-ground node names in first-appearance order."""
        seen: dict[str, None] = {}
        for e in self.elements:
            for n in e.nodes:
                if n != "0":
                    seen.setdefault(n, None)
        return list(seen)


# ----------------------------------------------------------------------------------------------
# reading: comments, continuation lines, lower-casing, .include, .end

_MAX_INCLUDE_DEPTH = 32
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
_BAD_NAME_CHARS = set("=(){}',;\"")
# output and analysis cards that do not change a transient: read, listed in one info line
_IGNORED_CARDS = {".print", ".plot", ".probe", ".save", ".op", ".width", ".four", ".meas", ".measure",
                  ".ac", ".dc", ".noise", ".disto", ".tf", ".sens", ".pz", ".title", ".csparam"}
_OPTION_CARDS = {".options", ".option", ".opt"}
# .control commands that change the circuit or the simulator for the runs after them (``alter``
# is applied: circuits.alter)
_CONTROL_CHANGES = {"altermod", "alterparam", "option", "options", "opt", "mc_source",
                    "reset", "remcirc", "source", "circbyline"}
# .options the reference honours (see circuits.simulation); any other option is listed as ignored
_HONOURED_OPTIONS = {"reltol", "abstol", "vntol", "method", "maxord"}
_DEFAULT_TEMP = 27.0  # C: the only temperature the device models implement (ngspice's default)
_SOURCE_KINDS = {k: arity for k, arity in ARITY.items() if k != "dc"}  # the time-dependent waveforms
_SOURCE_KEYWORDS = {"dc", "ac", *_SOURCE_KINDS}
_UNSUPPORTED_KINDS = {"trnoise", "trrandom", "pat", "external"}  # ngspice's other waveforms
# C and L instance parameters (cap.c, ind.c): tc1 and tc2 act through temp - tnom, 0 at 27 C;
# bv_max is a warning limit only
_RLC_PARAMS = {"c": {"ic", "m", "scale", "tc1", "tc2", "bv_max"}, "l": {"ic", "m", "scale", "tc1", "tc2"}}
# R instance parameters (res.c): ac= is the AC analysis' resistance only; the temperature coefficients
# act through temp - tnom, 0 at 27 C; noisy and bv_max are noise and safe-operating-area settings
_R_PARAMS = {"ac", "m", "scale", "tc1", "tc2", "tce", "noisy", "bv_max"}
_R_INERT_WHY = {"ac": "AC analysis only", "tc1": "no effect at 27 C", "tc2": "no effect at 27 C",
                "tce": "no effect at 27 C", "noisy": "noise analysis only", "bv_max": "a warning limit only"}
_R_INERT = tuple(_R_INERT_WHY)
_ONE = Expr.const(1.0)
_R_ALIASES = {"tc": "tc1", "noise": "noisy", "r": "value", "resistance": "value"}


@dataclass
class _Line:
    """One logical netlist line (continuations joined) and where it starts."""

    text: str
    loc: SourceLoc


def _strip_comment(line: str) -> str:
    """Remove ``;`` and ``$ `` inline comments."""
    line = line.split(";", 1)[0]
    m = re.search(r"(?:^|\s)\$(?:\s|$)", line)
    return line[: m.start()] if m else line


# ngspice 39 turns a line starting with one of these into a comment, with a warning (measured:
# a model's closing ')' on a line of its own)
_UNUSUAL_LEADING = set("=[]?()&%$\"!:,;\f")


def _logical_lines(text: str, file: str, first: int, ignored: list[str] | None = None) -> list[_Line]:
    """Join ``+`` continuations and drop comments/blank lines, starting at 1-based line ``first``;
    lines that ngspice comments out (`_UNUSUAL_LEADING`) are added to ``ignored``."""
    out: list[_Line] = []
    for no, raw in enumerate(text.split("\n")[first - 1:], first):
        line = _strip_comment(raw.rstrip("\r")).strip()
        if not line or line.startswith("*"):
            continue
        if line[0] in _UNUSUAL_LEADING:
            if ignored is not None:
                ignored.append(f"'{line[:20]}' (line {no}, a comment to ngspice)")
            continue
        if line.startswith("+"):
            if not out:
                raise NetlistError("continuation line '+' has no line to continue", file, no)
            out[-1].text += " " + line[1:]
        else:
            out.append(_Line(line, SourceLoc(file, no)))
    return out


def read_netlist_text(path: Path) -> str:
    """A netlist file's text: UTF-8, else Latin-1 (every byte is a character, so never a decode error)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class _Reader:
    """Expands `.include` recursively, lower-cases cards, sets `.control` blocks apart, stops at `.end`."""

    def __init__(self) -> None:
        self.stack: list[Path] = []
        self.control: list[_Line] = []  # lines inside .control ... .endc
        self.ignored: list[str] = []  # lines ngspice reads as comments

    def read(self, text: str, file: str, base_dir: Path, first: int) -> list[_Line]:
        """Logical lines of ``text`` with includes expanded."""
        out: list[_Line] = []
        block: _Line | None = None  # the open .control card
        for line in _logical_lines(text, file, first, self.ignored):
            card = line.text.split(None, 1)[0].lower()
            if block is not None:
                if card == ".endc":
                    block = None
                else:
                    self.control.append(_Line(line.text.lower(), line.loc))
            elif card == ".control":
                block = line
            elif card == ".endc":
                raise _err(line.loc, ".endc without .control")
            elif card in (".include", ".inc"):
                out.extend(self.include(line, base_dir))
            elif card == ".end":
                break
            else:
                out.append(_Line(line.text.lower(), line.loc))
        if block is not None:
            raise _err(block.loc, "unterminated .control (missing .endc)")
        return out

    def include(self, line: _Line, base_dir: Path) -> list[_Line]:
        """Lines of the file named by an `.include` card."""
        parts = line.text.split(None, 1)
        name = parts[1].strip().strip("\"'").strip() if len(parts) > 1 else ""
        if not name:
            raise NetlistError(".include needs a file name", line.loc.file, line.loc.line)
        path = base_dir / name
        try:
            resolved = path.resolve()
            if resolved in self.stack or len(self.stack) > _MAX_INCLUDE_DEPTH:
                chain = " -> ".join(p.name for p in [*self.stack, resolved])
                raise NetlistError(f"include cycle: {chain}", line.loc.file, line.loc.line)
            text = read_netlist_text(path)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or "not a readable text file"
            raise NetlistError(f"cannot read include file '{name}': {reason}",
                               line.loc.file, line.loc.line) from None
        self.stack.append(resolved)
        try:
            return self.read(text, str(path), path.parent, first=1)
        finally:
            self.stack.pop()


# ----------------------------------------------------------------------------------------------
# tokens


def _tokenize(text: str, loc: SourceLoc) -> list[str]:
    """Split a card into words; ``{..}``, ``'..'`` and parenthesised groups stay inside their word.

    ``=`` is a token of its own (but not in the comparisons ``== <= >= !=``); whitespace and commas
    outside groups separate words.
    """
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace() or c == ",":
            i += 1
        elif c == "=" and not _in_comparison(text, i):
            tokens.append("=")
            i += 1
        else:
            j = _word_end(text, i, loc)
            tokens.append(text[i:j])
            i = j
    return tokens


def _in_comparison(text: str, i: int) -> bool:
    """Whether the ``=`` at ``i`` belongs to one of the operators ``== <= >= !=``."""
    return text[i + 1:i + 2] == "=" or (i > 0 and text[i - 1] in "=<>!")


def _word_end(text: str, i: int, loc: SourceLoc) -> int:
    """Index just past the word starting at ``i``."""
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            i = _group_end(text, i, "{", "}", loc)
            continue
        if c == "'":
            i = _group_end(text, i, "'", "'", loc)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                raise NetlistError("unbalanced ')'", loc.file, loc.line)
            depth -= 1
        elif depth == 0 and (c.isspace() or c == "," or (c == "=" and not _in_comparison(text, i))):
            break
        i += 1
    if depth:
        raise NetlistError("unbalanced '('", loc.file, loc.line)
    return i


def _group_end(text: str, i: int, open_: str, close: str, loc: SourceLoc) -> int:
    """Index just past the ``{...}`` (nested) or ``'...'`` group starting at ``i``."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == close and (depth == 1 or open_ == close) and j > i:
            return j + 1
        if text[j] == open_:
            depth += 1
        elif text[j] == close:
            depth -= 1
    raise NetlistError(f"unterminated '{open_}'", loc.file, loc.line)


def _paren_end(text: str, i: int, loc: SourceLoc) -> int:
    """Index just past the ``)`` matching the ``(`` at ``i`` (groups skipped)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "{'":
            i = _group_end(text, i, c, "}" if c == "{" else "'", loc)
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        i += 1
        if depth == 0:
            return i
    raise _err(loc, "unbalanced '('")


def _split_call(word: str, loc: SourceLoc) -> tuple[str, list[str]] | None:
    """``head(a b c)`` -> (head, tokens of the group) if the whole word is one call, else None."""
    p = word.find("(")
    if p < 0 or not word.endswith(")") or _paren_end(word, p, loc) != len(word):
        return None
    head = word[:p].strip()
    if "{" in head or "'" in head:
        return None
    return head, _tokenize(word[p + 1:-1], loc)


def _bare(text: str) -> str:
    """The text without its ``{...}`` and ``'...'`` groups."""
    return re.sub(r"\{[^{}]*\}|'[^']*'", "", text)


def _err(loc: SourceLoc, message: str) -> NetlistError:
    """A `NetlistError` at ``loc``."""
    return NetlistError(message, loc.file, loc.line)


def _expr(token: str, loc: SourceLoc) -> Expr:
    """A value token (number, ``{expr}``, ``'expr'`` or bare expression) as an `Expr`.

    Braces group like parentheses, so ``{a}*{b}`` and ``{2*a}`` both work.
    """
    if token == "=":
        raise _err(loc, "missing value before '='")
    if len(token) >= 2 and token[0] == token[-1] == "'":
        token = token[1:-1]
    return Expr.parse(token.replace("{", "(").replace("}", ")"), loc.file, loc.line)


def _check_name(word: str, what: str, loc: SourceLoc) -> str:
    """Validate a parameter/subcircuit name."""
    if not _NAME_RE.fullmatch(word):
        raise _err(loc, f"bad {what} name '{word}'")
    return word


def _node(word: str, loc: SourceLoc) -> str:
    """Validate a node name; ``gnd`` becomes ``0``."""
    if _BAD_NAME_CHARS & set(word):
        raise _err(loc, f"bad node name '{word}'")
    return "0" if word == "gnd" else word


def _split_args(tokens: list[str], loc: SourceLoc) -> tuple[list[str], dict[str, Expr]]:
    """Positional words followed by ``key=value`` pairs."""
    pos: list[str] = []
    kv: dict[str, Expr] = {}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "=":
            raise _err(loc, "unexpected '='")
        if i + 1 < len(tokens) and tokens[i + 1] == "=":
            if i + 2 >= len(tokens) or tokens[i + 2] == "=":
                raise _err(loc, f"missing value for '{t}'")
            key = _check_name(t, "parameter", loc)
            if key in kv:
                raise _err(loc, f"duplicate parameter '{key}'")
            kv[key] = _expr(tokens[i + 2], loc)
            i += 3
            continue
        if kv:
            raise _err(loc, f"unexpected '{t}' after parameters")
        pos.append(t)
        i += 1
    return pos, kv


def _check_keys(kv: dict[str, Expr], allowed: set[str] | dict, what: str, loc: SourceLoc) -> None:
    """Reject parameter names that ``what`` does not accept."""
    for k in kv:
        if k not in allowed:
            raise _err(loc, f"unknown parameter '{k}' for {what}")


# ----------------------------------------------------------------------------------------------
# element cards (local, unflattened names)


@dataclass
class _Instance:
    """An ``X`` card before flattening."""

    name: str
    nodes: list[str]
    subckt: str
    overrides: dict[str, Expr]
    loc: SourceLoc


def _two_terminal_value(name: str, args: list[str], loc: SourceLoc, n_nodes: int) -> tuple[list[str], Expr]:
    """Nodes and value of ``name n1 .. nk value`` (no extra fields)."""
    if len(args) < n_nodes:
        raise _err(loc, f"{name}: expected {n_nodes} nodes and a value")
    if len(args) == n_nodes:
        raise _err(loc, f"{name}: missing value")
    if len(args) > n_nodes + 1:
        raise _err(loc, f"{name}: unexpected '{args[n_nodes + 1]}'")
    return [_node(a, loc) for a in args[:n_nodes]], _expr(args[n_nodes], loc)


def _resistor(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """R: ``name n1 n2 [value] [model] [k=v ...]`` as ngspice-39's INP2R reads it (``r=`` or
    ``resistance=`` for the value, ``tc=a b`` for ``tc1=a tc2=b``).  A single word after the nodes
    that names a `.model` is the model: `_Flattener.place` decides once every model is known."""
    pos, kv = _split_args(_tc_pair(toks), loc)
    for alias, canonical in _R_ALIASES.items():
        if alias in kv:
            if canonical in kv:
                raise _err(loc, f"{name}: both '{alias}' and '{canonical}' given")
            kv = {(canonical if k == alias else k): e for k, e in kv.items()}
    if len(pos) < 2:
        raise _err(loc, f"{name}: expected 2 nodes and a value")
    nodes, rest = [_node(a, loc) for a in pos[:2]], pos[2:]
    if len(rest) > 2:
        raise _err(loc, f"{name}: unexpected '{rest[2]}'")
    value = kv.pop("value", None)
    if value is not None and rest and (len(rest) == 2 or _looks_numeric(rest[0])):
        raise _err(loc, f"{name}: value given twice")
    model = None
    if len(rest) == 2 or (len(rest) == 1 and value is not None):
        model = rest[-1]
        if _looks_numeric(model):
            raise _err(loc, f"{name}: unexpected '{model}'")
        if _BAD_NAME_CHARS & set(model):
            raise _err(loc, f"{name}: bad model name '{model}'")
    if len(rest) == 2 or (rest and value is None):
        value = _expr(rest[0], loc)
    if value is None and model is None:
        raise _err(loc, f"{name}: missing value")
    for k in ("temp", "dtemp"):
        if k in kv:
            raise _err(loc, f"{name}: parameter '{k}' is not supported: instance temperatures are not "
                            "supported (27 C only)")
    return Element("r", name, nodes, loc, value=value, model=model, params=kv)


def _tc_pair(toks: list[str]) -> list[str]:
    """INP2R's ``tc = a b`` -> ``tc = a tc2 = b`` (the first such pair only)."""
    for k in range(len(toks) - 3):
        if (toks[k] in ("tc", "tc1") and toks[k + 1] == "=" and _looks_numeric(toks[k + 2])
                and _looks_numeric(toks[k + 3]) and (k + 4 >= len(toks) or toks[k + 4] != "=")):
            return [*toks[:k + 3], "tc2", "=", *toks[k + 3:]]
    return toks


def _rlc(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """C, L: ``name n1 n2 value [ic=v]``."""
    pos, kv = _split_args(toks, loc)
    nodes, value = _two_terminal_value(name, pos, loc, 2)
    _check_keys(kv, _RLC_PARAMS[name[0]], name, loc)
    return Element(name[0], name, nodes, loc, value=value, params=kv)


def _controlled(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """E, G: ``name n+ n- nc+ nc- gain``, or ngspice's behavioural ``name n+ n- value={expr}``
    (``vol=`` for E, ``cur=`` for G), which is a B source (V= for E, I= for G)."""
    pos, kv = _split_args(toks, loc)
    key = {"e": "vol", "g": "cur"}[name[0]]
    if len(pos) == 2 and len(kv) == 1 and next(iter(kv)) in ("value", key):
        return Element("b", name, [_node(t, loc) for t in pos], loc,
                       behavior=("v" if name[0] == "e" else "i", next(iter(kv.values()))))
    nodes, value = _two_terminal_value(name, pos, loc, 4)
    _check_keys(kv, set(), name, loc)
    return Element(name[0], name, nodes, loc, value=value)


def _coupling(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """K: ``name L1 L2 k`` (coupling coefficient k of two inductors)."""
    pos, kv = _split_args(toks, loc)
    if len(pos) != 3 or kv:
        raise _err(loc, f"{name}: expected 'L1 L2 coupling'")
    for ind in pos[:2]:
        if not ind.startswith("l"):
            raise _err(loc, f"{name}: '{ind}' is not an inductor")
    if pos[0] == pos[1]:
        raise _err(loc, f"{name}: couples '{pos[0]}' with itself")
    return Element("k", name, [], loc, value=_expr(pos[2], loc), controls=pos[:2])


def _current_controlled(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """F, H: ``name n+ n- vname gain`` (the current through voltage source vname controls it)."""
    pos, kv = _split_args(toks, loc)
    if "poly" in pos or any(t.startswith("poly(") for t in pos):
        raise _err(loc, f"{name}: POLY controlled sources are not supported")
    if len(pos) != 4 or kv:
        raise _err(loc, f"{name}: expected 'n+ n- vname gain'")
    if not pos[2].startswith("v"):
        raise _err(loc, f"{name}: controlling element '{pos[2]}' is not a voltage source "
                        "(only V sources' currents are supported)")
    return Element(name[0], name, [_node(t, loc) for t in pos[:2]], loc, value=_expr(pos[3], loc),
                   controls=[pos[2]])


def _waveform_args(kind: str, words: list[str], loc: SourceLoc) -> list[Expr]:
    """Parse a waveform's argument list and check it (`circuits.waveforms.check_args`)."""
    args = [_expr(w, loc) for w in words]
    why = check_args(kind, [a.value() if a.is_constant else None for a in args])
    if why:
        raise _err(loc, why)
    return args


def _source(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """V, I: ``name n+ n- [DC] v | [DC v] PULSE(..) | SIN(..) | PWL(..) [AC mag [phase]]``."""
    if len(toks) < 2:
        raise _err(loc, f"{name}: expected 2 nodes and a value")
    nodes = [_node(t, loc) for t in toks[:2]]
    rest, dc, wave, i = toks[2:], None, None, 0
    while i < len(rest):
        word, call = rest[i], _split_call(rest[i], loc)
        if (call[0] if call else word) in _UNSUPPORTED_KINDS:
            raise _err(loc, f"{name}: waveform {(call[0] if call else word).upper()} is not supported "
                            f"(supported: {', '.join(k.upper() for k in ARITY)})")
        if word == "dc" or (call is None and word not in _SOURCE_KEYWORDS and dc is None and wave is None):
            i += word == "dc"
            if dc is not None or i >= len(rest) or rest[i] in _SOURCE_KEYWORDS:
                raise _err(loc, f"{name}: missing or repeated DC value")
            dc, i = _expr(rest[i], loc), i + 1
        elif word == "ac":
            i = _skip_ac(name, rest, i + 1, loc)
        elif wave is None and (word in _SOURCE_KINDS or (call and call[0] in _SOURCE_KINDS)):
            wave, i = _waveform(word, call, rest, i, loc)
        else:
            raise _err(loc, f"{name}: unexpected '{word}'")
    if wave is None:
        if dc is None and "ac" in rest:  # an AC-only source is 0 in the transient (ngspice: DC 0)
            dc = Expr.const(0.0)
        if dc is None:
            raise _err(loc, f"{name}: missing value")
        wave = Waveform("dc", [dc], dc)
    wave.dc = dc
    return Element(name[0], name, nodes, loc, waveform=wave)


def _skip_ac(name: str, rest: list[str], i: int, loc: SourceLoc) -> int:
    """Skip the magnitude (and optional phase) after ``AC``; they are ignored."""
    if i >= len(rest) or rest[i] in _SOURCE_KEYWORDS or _split_call(rest[i], loc):
        raise _err(loc, f"{name}: AC needs a magnitude")
    _expr(rest[i], loc)
    i += 1
    if i < len(rest) and rest[i] not in _SOURCE_KEYWORDS and not _split_call(rest[i], loc):
        _expr(rest[i], loc)
        i += 1
    return i


def _waveform(word: str, call: tuple[str, list[str]] | None, rest: list[str], i: int,
              loc: SourceLoc) -> tuple[Waveform, int]:
    """Parse ``KIND(args)``, ``KIND (args)`` or ``KIND a b c`` starting at ``rest[i]``."""
    if call is not None:
        kind, words, i = call[0], call[1], i + 1
    else:
        kind, i = word, i + 1
        group = _split_call(rest[i], loc) if i < len(rest) else None
        if group is not None and group[0] == "":
            words, i = group[1], i + 1
        else:
            j = i
            while j < len(rest) and rest[j] not in _SOURCE_KEYWORDS:
                j += 1
            words, i = rest[i:j], j
    return Waveform(kind, _waveform_args(kind, words, loc)), i


def _behavioral(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """B: ``name n+ n- I=expr`` or ``V=expr``."""
    if len(toks) < 5 or toks[2] not in ("i", "v") or toks[3] != "=":
        raise _err(loc, f"{name}: expected 'n+ n- I=expr' or 'n+ n- V=expr'")
    text = toks[4] if len(toks) == 5 else " ".join(toks[4:])
    expr = _expr(text, loc) if "=" not in toks[4:] else None
    if expr is None:
        raise _err(loc, f"{name}: unexpected '=' in expression")
    return Element("b", name, [_node(t, loc) for t in toks[:2]], loc, behavior=(toks[2], expr))


def _looks_numeric(word: str) -> bool:
    """A value rather than a name (model names start with a letter)."""
    return word[:1] in "0123456789.+-{'"


def _modeled(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """D, M, Q, N, U: ``name nodes... model [area] [k=v ...]`` (node counts checked here and later).

    Q takes 3 or 4 nodes (the substrate defaults to ground): ``q c b e [s] model [area]``."""
    toks, off = _flag(toks, "off")
    toks, thermal = _flag(toks, "thermal") if name[0] == "m" else (toks, False)
    pos, kv = _split_args(toks, loc)
    kind = name[0]
    if thermal:  # VDMOS's self-heating switch: the device rejects it with its reason
        kv = {**kv, "thermal": Expr.const(1.0)}
    if off:  # ngspice's flag: the device starts off in the DC operating point's Newton
        if "off" in kv:
            raise _err(loc, f"{name}: 'off' given twice")
        kv = {**kv, "off": Expr.const(1.0)}
    if kind == "q" and 4 <= len(pos) <= 6:
        # the model is the word after the nodes that is followed by at most an area value
        n_nodes = 4 if len(pos) == 6 or (len(pos) == 5 and not _looks_numeric(pos[4])) else 3
        if len(pos) > n_nodes + 1:
            pos, kv = _area_from_position(name, pos, kv, loc)
        if n_nodes == 3:
            pos.insert(3, "0")
    if kind == "d" and len(pos) == 4:
        pos, kv = _area_from_position(name, pos, kv, loc)
    need = {"d": 2, "m": 4, "q": 4, "u": 3}.get(kind)
    vdmos_nodes = kind == "m" and len(pos) in (4, 6)  # VDMOS: 3 nodes (5 with thermal ones), checked with the model
    if len(pos) < 2 or (need is not None and len(pos) != need + 1 and not vdmos_nodes):
        count = "3 or 4 nodes" if kind == "q" else f"{need} nodes" if need else "nodes"
        raise _err(loc, f"{name}: expected {count} and a model name")
    model = pos[-1]
    if _BAD_NAME_CHARS & set(model):
        raise _err(loc, f"{name}: bad model name '{model}'")
    return Element(kind, name, [_node(t, loc) for t in pos[:-1]], loc, model=model, params=kv)


def _flag(toks: list[str], word: str) -> tuple[list[str], bool]:
    """Remove a bare flag word (not a node, not part of ``k=v``) from a card's tokens, anywhere
    after the first node as ngspice's device parser accepts it."""
    keep = [t for k, t in enumerate(toks) if not (
        k > 0 and t == word and toks[k - 1] != "=" and (k + 1 >= len(toks) or toks[k + 1] != "="))]
    return keep, len(keep) < len(toks)


def _switch(name: str, toks: list[str], loc: SourceLoc) -> Element:
    """S: ``name n+ n- nc+ nc- model [on|off]``; W: ``name n+ n- vname model [on|off]`` (the
    initial state for the DC operating point; default off)."""
    pos, kv = _split_args(toks, loc)
    _check_keys(kv, set(), name, loc)
    params = {}
    if pos and pos[-1] in ("on", "off"):
        params = {"on": Expr.const(1.0)} if pos.pop() == "on" else {}
    n_nodes = 4 if name[0] == "s" else 3
    if len(pos) != n_nodes + 1:
        shape = "n+ n- nc+ nc- model" if name[0] == "s" else "n+ n- vname model"
        raise _err(loc, f"{name}: expected '{shape} [on|off]'")
    model = pos[-1]
    if _BAD_NAME_CHARS & set(model):
        raise _err(loc, f"{name}: bad model name '{model}'")
    if name[0] == "s":
        return Element("s", name, [_node(t, loc) for t in pos[:4]], loc, model=model, params=params)
    if not pos[2].startswith("v"):
        raise _err(loc, f"{name}: controlling element '{pos[2]}' is not a voltage source "
                        "(only V sources' currents are supported)")
    return Element("w", name, [_node(t, loc) for t in pos[:2]], loc, model=model, params=params,
                   controls=[pos[2]])


def _area_from_position(name: str, pos: list[str], kv: dict[str, Expr], loc: SourceLoc
                        ) -> tuple[list[str], dict[str, Expr]]:
    """Move a positional area value (the last word) into the parameters."""
    if "area" in kv:
        raise _err(loc, f"{name}: area given twice")
    return pos[:-1], {"area": _expr(pos[-1], loc), **kv}


def _instance(name: str, toks: list[str], loc: SourceLoc) -> _Instance:
    """X: ``name nodes... subckt [params:] k=v ...``."""
    toks = [t.removeprefix("params:") for t in toks if t != "params:"]
    pos, kv = _split_args(toks, loc)
    if not pos:
        raise _err(loc, f"{name}: missing subcircuit name")
    return _Instance(name, [_node(t, loc) for t in pos[:-1]], pos[-1], kv, loc)


_ELEMENT_PARSERS = {
    "r": _resistor, "c": _rlc, "l": _rlc, "v": _source, "i": _source, "e": _controlled, "g": _controlled,
    "b": _behavioral, "k": _coupling, "f": _current_controlled, "h": _current_controlled, "d": _modeled, "m": _modeled, "q": _modeled, "n": _modeled, "x": _instance,
    "s": _switch, "u": _modeled, "w": _switch,
}


def _element(toks: list[str], loc: SourceLoc) -> Element | _Instance:
    """Parse one element card."""
    name = toks[0]
    parser = _ELEMENT_PARSERS.get(name[0])
    if parser is None:
        raise _err(loc, f"unknown element type '{name[0]}' ({name})")
    if _BAD_NAME_CHARS & set(name):
        raise _err(loc, f"bad element name '{name}'")
    return parser(name, toks[1:], loc)


# ----------------------------------------------------------------------------------------------
# control cards and subcircuit structure


@dataclass(eq=False)
class _Block:
    """The body of the top level or of one `.subckt` definition."""

    parent: _Block | None
    params: list[tuple[str, Expr, SourceLoc]] = field(default_factory=list)
    cards: list[Element | _Instance] = field(default_factory=list)
    subckts: dict[str, _Subckt] = field(default_factory=dict)

    def lookup(self, name: str) -> _Subckt | None:
        """The subcircuit definition visible from this block (innermost first)."""
        block: _Block | None = self
        while block is not None:
            if name in block.subckts:
                return block.subckts[name]
            block = block.parent
        return None


@dataclass(eq=False)
class _Subckt:
    """A `.subckt` definition."""

    name: str
    ports: list[str]
    defaults: dict[str, Expr]
    block: _Block
    loc: SourceLoc


def _device(model_type: str) -> Device | None:
    """The registered device family for a model type, or None."""
    import circuits.devices  # noqa: F401  (fills the registry)
    from circuits.devices.base import device_for_model_type

    return device_for_model_type(model_type)


def _parse_model(toks: list[str], loc: SourceLoc) -> Model:
    """``.model name type [(] k=v ... [)]``, checked against the device registry."""
    if len(toks) < 2:
        raise _err(loc, ".model needs a name and a type")
    name, rest = toks[0], toks[2:]
    call = _split_call(toks[1], loc)
    mtype = call[0] if call else toks[1]
    if call:
        if rest:
            raise _err(loc, f".model {name}: unexpected '{rest[0]}'")
        rest = call[1]
    elif len(rest) == 1 and (group := _split_call(rest[0], loc)) and group[0] == "":
        rest = group[1]
    _check_level(name, mtype, rest, loc)
    rest, flags = _model_words(mtype, rest)
    pos, params = _split_args(rest, loc)
    params.update(flags)
    if pos or _BAD_NAME_CHARS & set(name):
        raise _err(loc, f".model {name}: expected 'name type k=v ...'")
    dev = _device(mtype)
    dev = dev.variant(params) if dev is not None else None
    for alias, canonical in (dev.aliases.items() if dev else ()):
        if alias in params:
            if canonical in params:
                raise _err(loc, f".model {name}: both '{alias}' and '{canonical}' given")
            params = {(canonical if k == alias else k): v for k, v in params.items()}
    _check_model_params(name, mtype, params, loc)
    return Model(name, mtype, params, loc)


def _model_words(mtype: str, toks: list[str]) -> tuple[list[str], dict[str, Expr]]:
    """A device's bare flag words on its `.model` card (VDMOS's ``pchan``) as parameters set to 1, and
    the datasheet annotations ngspice drops from the card (VDMOS's ``ron= vds= qg= mfg=``) removed."""
    dev = _device(mtype)
    flags, notes = getattr(dev, "model_flags", ()), getattr(dev, "model_annotations", ())
    out: list[str] = []
    found: dict[str, Expr] = {}
    i = 0
    while i < len(toks):
        assigned = i + 2 < len(toks) and toks[i + 1] == "="
        if toks[i] in notes and assigned:
            i += 3
            continue
        if toks[i] in flags and not assigned:
            found[toks[i]] = Expr.const(1.0)
        else:
            out.append(toks[i])
        i += 1
    return out, found


def _check_level(name: str, mtype: str, toks: list[str], loc: SourceLoc) -> None:
    """A ``level=`` the device family does not implement is rejected before any other parameter
    is read (a BSIM card's other values need not even parse)."""
    dev = _device(mtype)
    if dev is None or "level" not in dev.model_params:
        return
    for k in range(len(toks) - 2):
        if toks[k] == "level" and toks[k + 1] == "=":
            try:
                level = _expr(toks[k + 2], loc)
            except NetlistError:
                level = None
            if level is None or not level.is_constant or level.value() not in dev.levels:
                shown = f"{level.value():g}" if level is not None and level.is_constant else toks[k + 2]
                supported = ", ".join(str(v) for v in dev.levels)
                raise _err(loc, f"{dev.family} level {shown} ({name}) is not supported; "
                                f"supported: {supported}")


def _check_model_params(name: str, mtype: str, params: dict[str, Expr], loc: SourceLoc) -> None:
    """Reject unknown model types, unknown or unsupported parameters and levels other than 1."""
    dev = _device(mtype)
    if dev is None:
        raise _err(loc, f".model {name}: unknown model type '{mtype}'")
    dev = dev.variant(params)
    for k, e in params.items():
        if k in dev.inert_params:
            only = dev.inert_params[k]
            if only is None or (e.is_constant and e.value() == only):
                continue
            reason = dev.rejected_params.get(k, f"only {only:g} is supported")
            raise _err(loc, f".model {name}: parameter '{k}' is not supported: {reason}")
        if k in dev.rejected_params:
            raise _err(loc, f".model {name}: parameter '{k}' is not supported: {dev.rejected_params[k]}")
        if k not in dev.model_params:
            raise _err(loc, f".model {name}: unknown parameter '{k}' for model type '{mtype}'")


def _parse_tran(toks: list[str], loc: SourceLoc) -> Tran:
    """``.tran tstep tstop [tstart [tmax]] [uic]``."""
    uic = bool(toks) and toks[-1] == "uic"
    words = toks[:-1] if uic else toks
    if not 2 <= len(words) <= 4:
        raise _err(loc, ".tran needs 'tstep tstop [tstart [tmax]] [uic]'")
    values = []
    for w in words:
        e = _expr(w, loc)
        if not e.is_constant:
            raise _err(loc, f".tran values must be constants, got '{w}'")
        values.append(e.value())
    if not all(v >= 0 and v < float("inf") for v in values) or values[0] <= 0 or values[1] <= 0:
        raise _err(loc, ".tran times must be finite, tstep and tstop positive")
    tstart = values[2] if len(values) > 2 else 0.0
    if tstart >= values[1]:
        raise _err(loc, ".tran tstart must be less than tstop")
    return Tran(values[0], values[1], tstart, values[3] if len(values) > 3 else None, uic)


def _parse_ic(toks: list[str], loc: SourceLoc) -> list[tuple[str, Expr]]:
    """``.ic v(n1)=x v(n2)=y ...``."""
    if not toks or len(toks) % 3:
        raise _err(loc, ".ic needs 'v(node)=value' entries")
    out = []
    for i in range(0, len(toks), 3):
        m = re.fullmatch(r"v\(\s*([^\s(),]+)\s*\)", toks[i])
        if m is None or toks[i + 1] != "=":
            raise _err(loc, f".ic: expected 'v(node)=value', got '{toks[i]}'")
        out.append((_node(m.group(1), loc), _expr(toks[i + 2], loc)))
    return out


class _Structure:
    """First pass: sorts cards into blocks, subcircuits, models, `.ic` and `.tran`."""

    def __init__(self) -> None:
        self.top = _Block(parent=None)
        self.models: dict[str, Model] = {}
        self.ic: list[tuple[str, Expr, SourceLoc]] = []
        self.tran: Tran | None = None
        self.open: list[_Subckt] = []
        self.options: dict[str, float | str] = {}
        self.option_locs: dict[str, SourceLoc] = {}
        self.globals: set[str] = set()
        self.ignored: list[str] = []
        self.alters: list[Alter] = []  # .control alters before the analysis

    def ignore(self, what: str, loc: SourceLoc) -> None:
        """Record something read that does not affect a transient."""
        self.ignored.append(f"{what} (line {loc.line})")

    def block(self) -> _Block:
        """The block cards currently go to."""
        return self.open[-1].block if self.open else self.top

    def add(self, line: _Line) -> None:
        """Sort one logical line."""
        card = line.text.split(None, 1)[0]
        if card in _IGNORED_CARDS or card == ".func":  # not read further (ngspice warns on bad ones)
            if card != ".func":  # (.func: read before the other cards, see `_user_functions`)
                self.ignore(card, line.loc)
            return
        text = line.text
        if card == ".model":  # ngspice's model reader takes an unclosed '(' (its ')' line is a comment)
            text += ")" * max(0, _bare(text).count("(") - _bare(text).count(")"))
        toks = _tokenize(text, line.loc)
        if not toks:
            return
        if toks[0].startswith("."):
            self.control(toks[0], toks[1:], line.loc)
        else:
            self.block().cards.append(_element(toks, line.loc))

    def control(self, card: str, toks: list[str], loc: SourceLoc) -> None:
        """Handle one dot card."""
        if card == ".subckt":
            self.begin_subckt(toks, loc)
        elif card == ".ends":
            self.end_subckt(toks, loc)
        elif card == ".param":
            self.add_params(toks, loc)
        elif card == ".model":
            model = _parse_model(toks, loc)
            if model.name in self.models:
                raise _err(loc, f"duplicate model '{model.name}'")
            self.models[model.name] = model
        elif card in (".ic", ".tran"):
            self.top_level_card(card, toks, loc)
        elif card in _OPTION_CARDS:
            self.add_options(toks, loc)
        elif card == ".temp":
            self.check_temperature("temp", toks[0] if toks else "", loc)
        elif card == ".global":
            if not toks:
                raise _err(loc, ".global needs node names")
            self.globals.update(_node(t, loc) for t in toks)
        elif card in _IGNORED_CARDS:
            self.ignore(card, loc)
        else:
            raise _err(loc, f"unsupported control card {card}")

    def check_temperature(self, what: str, word: str, loc: SourceLoc) -> None:
        """``.temp`` / ``temp=`` / ``tnom=``: only ngspice's default 27 C, which the models implement."""
        e = _expr(word, loc) if word else None
        if e is None or not e.is_constant or e.value() != _DEFAULT_TEMP:
            raise _err(loc, f"{what} {word or '(missing)'}: only {_DEFAULT_TEMP:g} C is supported "
                            "(the device models have no temperature dependence)")

    @staticmethod
    def check_scale(word: str, loc: SourceLoc) -> None:
        """``.options scale=``: only 1 (ngspice multiplies R, C, diode and MOSFET geometry by it)."""
        e = _expr(word, loc) if word else None
        if e is None or not e.is_constant or e.value() != 1:
            raise _err(loc, f".options scale={word or '(missing)'} is not supported: device "
                            "geometry scaling (only scale=1)")

    def add_options(self, toks: list[str], loc: SourceLoc) -> None:
        """``.options k=v flag ...``: keep the ones the reference honours, check temperatures,
        list the rest as ignored."""
        i = 0
        while i < len(toks):
            key = toks[i]
            has_value = i + 1 < len(toks) and toks[i + 1] == "="
            if has_value and i + 2 >= len(toks):
                raise _err(loc, f"missing value for option '{key}'")
            word = toks[i + 2] if has_value else ""
            i += 3 if has_value else 1
            if key in ("temp", "tnom"):
                self.check_temperature(key, word, loc)
            elif key == "scale":
                self.check_scale(word, loc)
            elif key in _HONOURED_OPTIONS and has_value:
                if key == "method":
                    if word not in ("trap", "trapezoidal", "gear"):
                        raise _err(loc, f"option method={word}: expected trap or gear")
                    self.options[key] = "gear" if word == "gear" else "trap"
                    continue
                e = _expr(word, loc)
                if not e.is_constant or not e.value() > 0:
                    raise _err(loc, f"option {key}={word}: expected a positive constant")
                self.options[key] = e.value()
                self.option_locs[key] = loc
            else:
                self.ignore(f".options {key}", loc)

    def control_tran(self, lines: list[_Line]) -> None:
        """A ``.control`` block: its first ``tran`` line is the analysis when there is no .tran card
        (ngspice batch semantics); the ``alter`` lines before the analysis are kept for
        `circuits.alter`; every other line is listed as ignored.  Another command that changes the
        circuit or the simulator before the analysis runs (``altermod``, ``option`` ...) is rejected."""
        ran = False  # the analysis has run (its tran, or a run of the deck's .tran)
        for line in lines:
            word = line.text.split(None, 1)[0]
            if not ran and word in _CONTROL_CHANGES:
                raise _err(line.loc, f".control '{word}' before the analysis changes the circuit or the "
                                     "simulator: not supported (move the change into the netlist)")
            if not ran and word == "alter":
                self.alters.append(parse_alter(line.text, line.loc))
            elif word == "tran" and self.tran is None:
                self.tran = _parse_tran(_tokenize(line.text, line.loc)[1:], line.loc)
            else:
                self.ignore(f".control '{word}'", line.loc)
            ran = ran or word in ("tran", "run")

    def add_params(self, toks: list[str], loc: SourceLoc) -> None:
        """``.param a=1 b={2*a} ...``."""
        pos, kv = _split_args(toks, loc)
        if pos or not kv:
            raise _err(loc, ".param needs 'name=value' entries")
        self.block().params.extend((k, e, loc) for k, e in kv.items())

    def top_level_card(self, card: str, toks: list[str], loc: SourceLoc) -> None:
        """``.ic`` and ``.tran`` (top level only)."""
        if self.open:
            raise _err(loc, f"{card} is not allowed inside .subckt")
        if card == ".ic":
            self.ic.extend((n, e, loc) for n, e in _parse_ic(toks, loc))
        elif self.tran is not None:
            raise _err(loc, "duplicate .tran")
        else:
            self.tran = _parse_tran(toks, loc)

    def begin_subckt(self, toks: list[str], loc: SourceLoc) -> None:
        """``.subckt name ports... [params:] k=v ...``."""
        toks = [t.removeprefix("params:") for t in toks if t != "params:"]
        pos, defaults = _split_args(toks, loc)
        if not pos:
            raise _err(loc, ".subckt needs a name")
        name = _check_name(pos[0], "subcircuit", loc)
        ports = [_node(p, loc) for p in pos[1:]]
        if len(set(ports)) != len(ports):
            raise _err(loc, f".subckt {name}: ports must be distinct nodes")
        parent = self.block()
        if name in parent.subckts:
            raise _err(loc, f"duplicate subcircuit '{name}'")
        sub = _Subckt(name, ports, defaults, _Block(parent=parent), loc)
        parent.subckts[name] = sub
        self.open.append(sub)

    def end_subckt(self, toks: list[str], loc: SourceLoc) -> None:
        """``.ends [name]``."""
        if not self.open:
            raise _err(loc, ".ends without .subckt")
        if toks and toks[0] != self.open[-1].name:
            raise _err(loc, f".ends {toks[0]} does not match .subckt {self.open[-1].name}")
        self.open.pop()

    def finish(self) -> None:
        """Check that every `.subckt` was closed and that the options are ones the reference has."""
        if self.open:
            sub = self.open[-1]
            raise _err(sub.loc, f"unterminated .subckt {sub.name} (missing .ends)")
        # ngspice's transient raises the order from 1 to 2 and never further, for trap and gear
        # alike (dctran.c), so any maxord >= 2 is order 2; maxord 1 would be backward Euler only
        order = self.options.get("maxord")
        if order is not None and order < 2:
            raise _err(self.option_locs["maxord"], f".options maxord={order:g} is not supported: the "
                                                   "reference integrates with trap or gear of order 2")


# ----------------------------------------------------------------------------------------------
# flattening


@dataclass
class _Scope:
    """Name mapping of one subcircuit instance (or the top level)."""

    prefix: str
    names: dict[str, str]
    ports: dict[str, str]
    globals: frozenset[str] = frozenset()  # `.global` nodes keep their name in every subcircuit

    def node(self, n: str) -> str:
        """Hierarchical name of local node ``n``."""
        if n in ("0", "gnd"):
            return "0"
        if n in self.ports:
            return self.ports[n]
        return n if n in self.globals else self.prefix + n


class _Flattener:
    """Second pass: expands instances into hierarchical elements and scoped parameters."""

    def __init__(self, structure: _Structure) -> None:
        self.s = structure
        self.params: dict[str, Expr] = {}
        self.elements: list[Element] = []
        self.names: set[str] = set()

    def run(self) -> tuple[list[Element], dict[str, Expr], dict[str, Expr]]:
        """Flatten; returns elements, params and the `.ic` map."""
        scope = _Scope("", {}, {}, frozenset(self.s.globals))
        self.define(self.s.top.params, scope)
        for model in self.s.models.values():
            for e in model.params.values():
                self.rename(e, scope, model.loc)
        self.expand(self.s.top, scope, ())
        self.check_behavioral_nodes()
        return self.elements, self.params, self.initial_conditions(scope)

    def rename(self, expr: Expr, scope: _Scope, loc: SourceLoc, dynamic: bool = False) -> Expr:
        """``expr`` with parameter and node names made hierarchical (all names must be visible)."""
        for n in sorted(expr.names):
            if n not in scope.names:
                raise _err(loc, f"undefined parameter '{n}'")
        if not dynamic and (expr.nodes or expr.uses_time):
            raise _err(loc, "node voltages and 'time' are only allowed in B sources")
        nodes = {n: scope.node(n) for pair in expr.nodes for n in pair}
        return expr.rename(scope.names, nodes)

    def define(self, params: list[tuple[str, Expr, SourceLoc]], scope: _Scope) -> None:
        """Add ``.param`` definitions of a block (in order) under scoped names."""
        for name, expr, loc in params:
            self.define_one(name, self.rename(expr, scope, loc), scope, loc)

    def define_one(self, name: str, expr: Expr, scope: _Scope, loc: SourceLoc) -> None:
        """Add one already-renamed parameter to the netlist and make it visible in ``scope``."""
        full = scope.prefix + name
        if full in self.params:
            raise _err(loc, f"duplicate parameter '{name}'")
        self.params[full] = expr
        scope.names[name] = full

    def claim(self, name: str, loc: SourceLoc) -> None:
        """Register a hierarchical element/instance name."""
        if name in self.names:
            raise _err(loc, f"duplicate element name '{name}'")
        self.names.add(name)

    def expand(self, block: _Block, scope: _Scope, stack: tuple[_Subckt, ...]) -> None:
        """Emit every card of ``block`` in ``scope``."""
        for card in block.cards:
            if isinstance(card, _Instance):
                self.instantiate(card, block, scope, stack)
            else:
                el = self.place(card, scope)
                self.claim(el.name, el.loc)
                self.elements.append(el)

    def place(self, el: Element, scope: _Scope) -> Element:
        """A hierarchical copy of a local element."""
        def ren(e: Expr) -> Expr:
            return self.rename(e, scope, el.loc)

        if el.kind == "r" and el.model is None and el.value is not None and el.value.text in self.s.models:
            el = replace(el, value=None, model=el.value.text)  # INP2R: a word naming a model is the model

        wave = el.waveform and Waveform(el.waveform.kind, [ren(a) for a in el.waveform.args],
                                        el.waveform.dc and ren(el.waveform.dc))
        behavior = el.behavior and (el.behavior[0], self.rename(el.behavior[1], scope, el.loc, True))
        return Element(el.kind, scope.prefix + el.name, [scope.node(n) for n in el.nodes], el.loc,
                       value=el.value and ren(el.value), waveform=wave, model=el.model,
                       params={k: ren(e) for k, e in el.params.items()}, behavior=behavior,
                       controls=[scope.prefix + c for c in el.controls])

    def instantiate(self, inst: _Instance, block: _Block, scope: _Scope,
                    stack: tuple[_Subckt, ...]) -> None:
        """Expand one ``X`` instance."""
        sub = block.lookup(inst.subckt)
        if sub is None:
            raise _err(inst.loc, f"{inst.name}: unknown subcircuit '{inst.subckt}'")
        if sub in stack:
            raise _err(inst.loc, f"{inst.name}: recursive instantiation of subcircuit '{sub.name}'")
        if len(inst.nodes) != len(sub.ports):
            raise _err(inst.loc, f"{inst.name}: subcircuit '{sub.name}' has {len(sub.ports)} ports, "
                                 f"got {len(inst.nodes)} nodes")
        _check_keys(inst.overrides, sub.defaults, f"subcircuit '{sub.name}'", inst.loc)
        for port, node in zip(sub.ports, inst.nodes):  # ground stays ground inside (ngspice: global)
            if port == "0" and scope.node(node) != "0":
                raise _err(inst.loc, f"{inst.name}: port '{port}' of subcircuit '{sub.name}' is ground; "
                                     f"it must be connected to ground, got '{node}'")
        full = scope.prefix + inst.name
        self.claim(full, inst.loc)
        child = _Scope(full + ".", dict(scope.names),
                       {p: scope.node(n) for p, n in zip(sub.ports, inst.nodes)}, scope.globals)
        for k, default in sub.defaults.items():
            value = (self.rename(inst.overrides[k], scope, inst.loc) if k in inst.overrides
                     else self.rename(default, child, sub.loc))
            self.define_one(k, value, child, inst.loc)
        self.define(sub.block.params, child)
        self.expand(sub.block, child, (*stack, sub))

    def initial_conditions(self, scope: _Scope) -> dict[str, Expr]:
        """The `.ic` map (values in the top-level scope); every node must exist."""
        known = self.known_nodes()
        ic = {}
        for node, e, loc in self.s.ic:
            if node not in known:
                raise _err(loc, f".ic: unknown node '{node}'")
            ic[node] = self.rename(e, scope, loc)
        return ic

    def known_nodes(self) -> set[str]:
        """Every non-ground node of the flat netlist."""
        return {n for el in self.elements for n in el.nodes if n != "0"}

    def check_behavioral_nodes(self) -> None:
        """Every node referenced by a B source's v() exists."""
        known = self.known_nodes() | {"0"}
        for el in self.elements:
            for n in (n for pair in (el.behavior[1].nodes if el.behavior else ()) for n in pair):
                if n not in known:
                    raise _err(el.loc, f"{el.name}: unknown node '{n}' in v()")


def _check_elements(nl: Netlist) -> None:
    """Cross-checks on the flat netlist: not empty, device models used correctly."""
    if not nl.elements:
        raise NetlistError("netlist has no elements", nl.file, 1)
    by_name = {el.name: el for el in nl.elements}
    for el in nl.elements:
        if el.model is not None:
            _check_device_use(el, nl.models)
        elif el.kind == "r":  # (a resistor's parameters are known once its word is known not a model)
            _check_keys(el.params, _R_PARAMS, el.name, el.loc)
        for c in el.controls:
            if c not in by_name:
                raise _err(el.loc, f"{el.name}: unknown element '{c}'")
        if el.kind == "k":  # the coupling needs both inductances (and their scale=)
            l1, l2 = (by_name[c] for c in el.controls)
            el.params = {**el.params, "l1": l1.value, "l2": l2.value, "s1": l1.params.get("scale", _ONE),
                         "s2": l2.params.get("scale", _ONE)}


def _element_device(el: Element, models: dict[str, Model]) -> Device | None:
    """The registered device family of a flat element (its model's, or its letter's)."""
    import circuits.devices  # noqa: F401  (fills the registry)
    from circuits.devices.base import device_for_letter

    if el.model is not None:
        return _device(models[el.model].type) if el.model in models else None
    return device_for_letter(el.kind)


def _check_device_use(el: Element, models: dict[str, Model]) -> None:
    """The element's model exists, is of the right kind, and its instance parameters are known."""
    model = models.get(el.model)
    if model is None:
        raise _err(el.loc, f"{el.name}: unknown model '{el.model}'")
    dev = _device(model.type)
    if dev.letter.lower() != el.kind:
        raise _err(el.loc, f"{el.name}: model '{model.name}' (type {model.type}) is not a "
                           f"'{el.kind}' device model")
    if el.kind == "m" and len(el.nodes) != dev.terminals:
        why = getattr(dev, "rejected_nodes", {}).get(len(el.nodes))
        raise _err(el.loc, f"{el.name}: {why}" if why else f"{el.name}: expected {dev.terminals} nodes and a model name")
    if el.kind == "n" and dev.terminals is not None and len(el.nodes) != dev.terminals:
        raise _err(el.loc, f"{el.name}: model type '{model.type}' needs {dev.terminals} nodes, "
                           f"got {len(el.nodes)}")
    for k in el.params:
        if k in dev.rejected_params:
            raise _err(el.loc, f"{el.name}: parameter '{k}' is not supported: {dev.rejected_params[k]}")
        if k not in dev.instance_params:
            raise _err(el.loc, f"{el.name}: unknown instance parameter '{k}'")


def parse_netlist(text: str, file: str = "<string>", base_dir: Path | None = None) -> Netlist:
    """Parse SPICE netlist text (first line = title) into a flattened `Netlist`."""
    base = Path(".") if base_dir is None else Path(base_dir)
    title = text.split("\n", 1)[0].strip()
    reader = _Reader()
    if Path(file).is_file():
        reader.stack.append(Path(file).resolve())
    structure = _Structure()
    lines = reader.read(text, file, base, first=2)
    branches = Branches(params=lambda: structure.top.params, in_subckt=lambda: bool(structure.open))
    with user_functions(_user_functions(lines)):
        for line in select_branches(lines, branches):
            structure.add(line)
        structure.finish()
        structure.control_tran(reader.control)
        elements, params, ic = _Flattener(structure).run()
        elements = apply_alters(structure.alters, elements, lambda el: _element_device(el, structure.models))
    nl = Netlist(title, elements, structure.models, params, ic, structure.tran, file,
                 structure.options, reader.ignored + structure.ignored, branches.deciding)
    _check_elements(nl)
    expand_urc_lines(nl)  # U lines become ngspice's lumped R and C sections
    uic = nl.tran is not None and nl.tran.uic
    nl.ignored += [f"{el.name} ic= without uic, as ngspice does (line {el.loc.line})"
                   for el in elements if "ic" in el.params and el.kind in "cl" and not uic]
    nl.ignored += [f"{el.name} {k}= ({_R_INERT_WHY[k]}) (line {el.loc.line})"
                   for el in elements if el.kind in "rcl" for k in _R_INERT if k in el.params]
    nl.ignored += [f"{el.name} {el.waveform.kind.upper()} value {UNUSED_ARGS[el.waveform.kind][0] + 1} "
                   f"({UNUSED_ARGS[el.waveform.kind][1]}) (line {el.loc.line})"
                   for el in elements if el.waveform and el.waveform.kind in UNUSED_ARGS
                   and len(el.waveform.args) > UNUSED_ARGS[el.waveform.kind][0]]
    if nl.ignored:
        _LOG.info("%s: ignored (no effect on the transient): %s", file, ", ".join(nl.ignored))
    return nl


def _user_functions(lines: list[_Line]) -> dict[str, tuple[tuple[str, ...], Expr]]:
    """The ``.func name(a, b ...) [=] body`` definitions, in order (a body may call earlier ones;
    ngspice reads them before the other cards, so a use may come first)."""
    defs: dict[str, tuple[tuple[str, ...], Expr]] = {}
    for line in lines:
        if line.text.split(None, 1)[0] != ".func":
            continue
        toks = [t for t in _tokenize(line.text, line.loc)[1:] if t != "="]
        call = _split_call(toks[0], line.loc) if toks else None
        if call is None or len(toks) != 2:
            raise _err(line.loc, ".func needs 'name(arg, ...) body'")
        name, args = _check_name(call[0], "function", line.loc), tuple(call[1])
        for a in args:
            _check_name(a, "function argument", line.loc)
        if name in defs:
            raise _err(line.loc, f"duplicate .func '{name}'")
        with user_functions(defs):
            defs[name] = (args, _expr(toks[1], line.loc))
    return defs


def parse_file(path: str | Path) -> Netlist:
    """Parse a netlist file; `.include` paths are resolved relative to it."""
    path = Path(path)
    try:
        text = read_netlist_text(path)
    except OSError as exc:
        raise NetlistError(f"{path}: cannot read netlist: {exc.strerror}") from None
    return parse_netlist(text, file=str(path), base_dir=path.parent)
