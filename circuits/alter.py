"""`.control` ``alter`` commands before the transient, read as ngspice-39's com_alter reads them.

ngspice (frontend/device.c com_alter_common) accepts

    alter @dev[param] = value      alter dev param = value      alter dev = value
    alter dev param value          alter dev value              (value: a number)
    alter @dev[param] = [ v1 v2 ... ]   alter dev param [ v1 v2 ... ]   (a vector: a waveform)

and sets the instance parameter (``dev = value``: the device's principal parameter: a resistor's
resistance, a capacitor's capacitance, an inductor's inductance, a source's dc) before the next
analysis.  Two forms ngspice itself fails on, printing an error and changing nothing, are read the
same way (nothing changes; a warning says so): more than one word after the parameter without an
``=`` (``alter v1 pulse(0 1 ...)``: "Only a single param - value pair supported") and a vector
whose ``[`` is not a word of its own (``= [0 1 ...]``: "cannot evaluate new parameter value").
Anything else this module cannot apply exactly (an expression as the value, a device inside a
subcircuit, a parameter the device's `alter` does not take) is a one-line NetlistError.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from circuits.errors import NetlistError
from circuits.expr import parse_number

_LOG = logging.getLogger(__name__)

__all__ = ["Alter", "parse_alter", "apply_alters"]


@dataclass(frozen=True)
class Alter:
    """One ``alter`` command: the device, the parameter (None: the device's principal one) and
    the values (one, or a vector); ``noop`` holds ngspice's error when ngspice changes nothing."""

    device: str
    param: str | None
    values: tuple[float, ...]
    loc: object  # circuits.netlist.SourceLoc
    text: str
    noop: str = ""


def _reject(loc, text: str, why: str) -> NetlistError:
    return NetlistError(f".control '{text}': {why}", loc.file, loc.line)


def _number(word: str) -> float | None:
    """A frontend number: optional sign, digits, SPICE suffix."""
    sign = -1.0 if word.startswith("-") else 1.0
    value = parse_number(word[1:] if word[:1] in "+-" else word)
    return None if value is None else sign * value


def _split_assignment(words: list[str], loc, text: str) -> tuple[list[str], str]:
    """The words with ngspice's '=' in place (com_alter_common's first two steps); ngspice's error
    text (nothing changes) where ngspice gives up."""
    for k, word in enumerate(words):
        if "=" in word:
            if len(word) > 1:
                lhs, _, rhs = word.partition("=")
                words = words[:k] + [w for w in (lhs, "=", rhs) if w] + words[k + 1:]
            return words, ""
    # no '=': the pre-3f4 forms 'alter dev value' and 'alter dev param value', a vector counting as one
    limit, last = 3, len(words) - 1
    if words and words[-1] == "]":
        while True:
            last -= 1
            limit += 1
            if last < 0:
                return words, "'[' is missing"
            if words[last] == "[":
                break
    if len(words) > limit:
        return words, "Only a single param - value pair supported"
    if last < 1:
        raise _reject(loc, text, "expected 'alter dev [param] value'")
    return words[:last] + ["="] + words[last:], ""


def parse_alter(text: str, loc) -> Alter:
    """Read one ``alter`` line (lower-case, without comments) as ngspice does."""
    words, failed = _split_assignment(text.split()[1:], loc, text)
    if failed:
        return Alter("", None, (), loc, text, noop=failed)
    eq = words.index("=")
    lhs, rhs = words[:eq], words[eq + 1:]
    if not lhs or not rhs:
        raise _reject(loc, text, "no assignment found")
    if lhs[0].startswith(("@", "#")):
        device, _, rest = lhs[0][1:].partition("[")
        param = rest.split("]", 1)[0] if rest else None
        extra = lhs[1:]
    else:
        device, param, extra = lhs[0], (lhs[1] if len(lhs) > 1 else None), lhs[2:]
    if extra:
        raise _reject(loc, text, f"unexpected '{extra[0]}' (ngspice ignores it with a warning)")
    if rhs[0] == "[":
        if rhs[-1] != "]" or len(rhs) < 3:
            raise _reject(loc, text, "a vector value is '[ v1 v2 ... ]'")
        items = rhs[1:-1]
    elif rhs[0].startswith("["):
        return Alter(device, param, (), loc, text, noop="cannot evaluate new parameter value")
    elif len(rhs) == 1:
        items = rhs
    else:
        raise _reject(loc, text, f"unexpected '{rhs[1]}' after the value")
    values = [_number(w) for w in items]
    if None in values:
        bad = items[values.index(None)]
        raise _reject(loc, text, f"value '{bad}' is not a number (expressions are not supported)")
    return Alter(device, param, tuple(values), loc, text)


def apply_alters(alters: list[Alter], elements: list, device_of) -> list:
    """The flat elements after the alters, in order.  device_of(element) -> its registered device."""
    elements = list(elements)
    index = {el.name: k for k, el in enumerate(elements)}
    for a in alters:
        if a.noop:
            _LOG.warning("%s:%d: '%s' changes nothing, as in ngspice-39 (\"%s\")", a.loc.file, a.loc.line,
                         a.text, a.noop)
            continue
        if a.device not in index:
            raise _reject(a.loc, a.text, f"no device '{a.device}' at the top level (ngspice: no such device)")
        el = elements[index[a.device]]
        dev = device_of(el)
        param = a.param if a.param is not None else next(iter(dev.alter_params), None)
        if param is None:
            raise _reject(a.loc, a.text, f"{el.name} has no parameter alter can set here")
        changed = dev.alter(el, param, list(a.values))
        if isinstance(changed, str):
            raise _reject(a.loc, a.text, f"{el.name}: {changed}")
        elements[index[a.device]] = changed
    return elements
