""".if / .elseif / .else / .endif in a netlist, as ngspice-39 reads them (inp.c, inpcom.c).

ngspice rewrites ``.if(expr)`` to ``.if{expr}``, lets numparam replace the braces by the value
printed with "% 23.15e", reads that back with atoi (so every finite non-zero value is true, 0, inf
and nan are false) and comments out the lines of the branches not taken; nested blocks nest.

numparam evaluates the whole deck before the branches are chosen, so a ``.param`` or ``.func`` in a
branch not taken is defined all the same, and subcircuits are expanded first: those cards inside a
block (and a block inside ``.subckt``) are rejected rather than read differently.  A condition sees
the global ``.param`` lines above it; those parameters (and the ones they depend on) decide the
netlist's structure, so they are recorded as fixed (`Netlist.fixed_params`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

from circuits.errors import NetlistError
from circuits.expr import Expr

__all__ = ["IF_CARD", "select_branches", "Branches"]

IF_CARD = re.compile(r"^\.(elseif|else|endif|if)(?![a-z0-9_])")
# cards ngspice acts on before it chooses the branches (numparam, subcircuit expansion)
_NOT_IN_BLOCK = {".param": "a .param inside .if is defined whatever the branch (ngspice's numparam "
                           "reads it first)",
                 ".func": "a .func inside .if is defined whatever the branch",
                 ".subckt": "a .subckt inside .if is expanded before the branches are chosen",
                 ".ends": "a .subckt inside .if is expanded before the branches are chosen"}


class _Loc(Protocol):
    file: str
    line: int


class _Line(Protocol):
    text: str
    loc: _Loc


@dataclass
class _Block:
    loc: _Loc
    parent_active: bool
    taken: bool = False    # some branch of the block was true
    active: bool = False   # the current branch is the one taken
    has_else: bool = False


@dataclass
class Branches:
    """The selection state: open blocks and the parameters that decided a branch."""

    params: Callable[[], list]          # the global (name, Expr, loc) .param entries read so far
    in_subckt: Callable[[], bool]       # whether a .subckt is open
    blocks: list[_Block] = field(default_factory=list)
    deciding: set[str] = field(default_factory=set)

    @property
    def active(self) -> bool:
        """Whether a line here is kept."""
        return not self.blocks or (self.blocks[-1].parent_active and self.blocks[-1].active)

    def truth(self, line: _Line, keyword: str) -> bool:
        """The condition of an .if/.elseif line (ngspice: between its first '(' and last ')')."""
        text = line.text
        first, last = text.find("("), text.rfind(")")
        if first < 0 or last < first:
            raise NetlistError(f"{keyword} needs a condition in parentheses", line.loc.file, line.loc.line)
        expr = Expr.parse(text[first + 1:last], line.loc.file, line.loc.line)
        if expr.nodes or expr.uses_time:
            raise NetlistError(f"{keyword}: a condition takes parameters only", line.loc.file, line.loc.line)
        known = {name: e for name, e, _ in self.params()}
        needed = _depends(expr.names, known)
        missing = sorted(needed - set(known))
        if missing:
            raise NetlistError(f"{keyword}: undefined parameter '{missing[0]}' (a condition sees the "
                               "global .param lines above it)", line.loc.file, line.loc.line)
        env: dict = {}
        for name, e in known.items():
            if name in needed:
                env[name] = e.evaluate(env)
        self.deciding |= needed
        value = float(expr.evaluate(env))
        return math.isfinite(value) and value != 0.0

    def card(self, line: _Line, keyword: str) -> None:
        """Apply one .if/.elseif/.else/.endif line."""
        loc = line.loc
        if keyword == "if":
            if self.in_subckt():
                raise NetlistError(".if inside .subckt is not supported (ngspice expands subcircuits "
                                   "before it chooses branches)", loc.file, loc.line)
            parent = self.active
            block = _Block(loc, parent)
            block.active = block.taken = parent and self.truth(line, ".if")
            self.blocks.append(block)
            return
        if not self.blocks:
            raise NetlistError(f".{keyword} without .if", loc.file, loc.line)
        block = self.blocks[-1]
        if keyword == "endif":
            self.blocks.pop()
        elif block.has_else:
            raise NetlistError(f".{keyword} after .else", loc.file, loc.line)
        elif keyword == "elseif":
            block.active = not block.taken and block.parent_active and self.truth(line, ".elseif")
            block.taken = block.taken or block.active
        else:
            block.has_else = True
            block.active = not block.taken
            block.taken = True

    def check(self, line: _Line, card: str) -> None:
        """Reject a card that ngspice reads before it chooses branches, inside a block."""
        if self.blocks and card in _NOT_IN_BLOCK:
            raise NetlistError(f"{card}: {_NOT_IN_BLOCK[card]}: not supported", line.loc.file, line.loc.line)

    def finish(self) -> None:
        """Every block closed."""
        if self.blocks:
            loc = self.blocks[-1].loc
            raise NetlistError("unterminated .if (missing .endif)", loc.file, loc.line)


def _depends(names: Iterable[str], params: dict[str, Expr]) -> set[str]:
    """The names and every parameter their definitions refer to, transitively."""
    out: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        if name in params:
            todo.extend(params[name].names)
    return out


def select_branches(lines: Iterable[_Line], branches: Branches) -> Iterator[_Line]:
    """The lines of the branches taken (the .if cards themselves removed), in order; a line is
    yielded before the next is read, so conditions see the .param lines above them."""
    for line in lines:
        m = IF_CARD.match(line.text)
        if m:
            branches.card(line, m.group(1))
            continue
        branches.check(line, line.text.split(None, 1)[0])
        if branches.active:
            yield line
    branches.finish()
