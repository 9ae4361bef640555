"""Uniform distributed RC line: ``Uxx n1 n2 n3 model L=len [N=lumps]`` with ``.model name URC (K FMAX
RPERL CPERL ISPERL RSPERL)``, as ngspice-39 builds it.

ngspice has no equations of its own for a URC line: its setup (urcsetup.c) replaces every instance by
N lumped sections between n1 and n2 over the reference n3, each section's elements a factor K larger
than the previous one's.  The netlist parser does the same here (`expand_urc_lines`), into plain R and
C elements (junction diodes carrying the capacitance when ISPERL is given), named as ngspice names them:
the instance ``u1`` (``xa.u1`` inside a subcircuit, ngspice's ``u.xa.u1``) gets the nodes ``u1#hi1``
.. ``u1#hiN`` and ``u1#lo1`` .. ``u1#lo{N-1}`` and the elements ``u1#rlo1``, ``u1#rhi1``, ``u1#clo1``,
``u1#chi1`` ... (a generated name that a user node or element already has gets more ``#``).

Section i (prop = K^(i-1), the factor built by repeated multiplication as ngspice does):
R ``rlo_i`` from the left node (n1, then ``lo_{i-1}``) to ``lo_i``, R ``rhi_i`` from ``hi_i`` to the
right node (n2, then ``hi_{i-1}``), both prop r1; C ``clo_i`` at ``lo_i`` and ``chi_i`` at ``hi_i``,
both prop c1, to n3.  The last section's ``lo`` node is its ``hi`` node and it has no ``chi``.  With
r0 = L RPERL, c0 = L CPERL:

    r1 = r0 (K-1) / (2 K^N - 2),    c1 = c0 (K-1) / (K^(N-1) (K+1) - 2)

and, when N is not given, N = max(3, int(ln(wnorm ((K-1)/K)^2) / ln K)) with wnorm = 2 pi FMAX r0 c0,
and N = 3 when wnorm < 35.  With ISPERL each capacitor is a diode (anode on the line, cathode n3) of
area prop and a model with CJO = c1, IS = L ISPERL (K-1) / (K^(N-1) (K+1) - 2), RS = L N RSPERL.

The lumps are structure, so the parameters that size them (L, N and the model's values, and whatever
they refer to) keep their netlist values: they join `Netlist.fixed_params`.
"""

from __future__ import annotations

import math

from circuits.conditionals import _depends
from circuits.devices.base import Device, register
from circuits.errors import NetlistError
from circuits.expr import Expr

__all__ = ["UniformRCLine", "urc_lumps", "urc_sections", "expand_urc_lines"]

MAX_LUMPS = 10_000  # a sanity bound (ngspice has none): more sections than this is a typo in FMAX or L


@register
class UniformRCLine(Device):
    """U n1 n2 n3 model L= [N=]: a placeholder the netlist parser expands into R, C (and D) elements."""

    letter = "u"
    family = "URC line"
    model_types = ("urc",)
    terminals = 3
    model_params = {"k": 1.5, "fmax": 1e9, "rperl": 1000.0, "cperl": 1e-12, "isperl": 0.0, "rsperl": 0.0}
    instance_params = {"l": 0.0, "n": 0.0}

    def evaluate(self, v, s, t, p, ctx=None):
        raise NotImplementedError("URC lines are expanded into R and C elements by the netlist parser")


def urc_lumps(k: float, fmax: float, r0: float, c0: float) -> int:
    """ngspice's lump count of a line with total resistance r0 and capacitance c0 (N not given)."""
    wnorm = fmax * r0 * c0 * 2.0 * math.pi
    if wnorm < 35:
        return 3
    shrink = (k - 1) / k
    return int(max(3.0, math.log(wnorm * (shrink * shrink)) / math.log(k)))


def urc_sections(k: float, lumps: int, total: float) -> float:
    """The first section's capacitance (or saturation current) of a line holding ``total`` in all."""
    return (total * (k - 1)) / ((math.pow(k, lumps - 1)) * (k + 1) - 2)


class _Fresh:
    """Generated names that no user name (nor an earlier generated one) has."""

    def __init__(self, used) -> None:
        self.used = set(used)

    def __call__(self, name: str) -> str:
        while name in self.used:
            name += "#"
        self.used.add(name)
        return name


def _values(el, model, env) -> dict[str, float]:
    """The line's model and instance values (model defaults filled in), as numbers."""
    def number(what: str, expr: Expr) -> float:
        x = float(expr.value() if expr.is_constant else expr.evaluate(env))
        if not math.isfinite(x):
            raise NetlistError(f"{el.name}: {what} is not finite", el.loc.file, el.loc.line)
        return x

    vals = dict(UniformRCLine.model_params)
    vals.update({k: number(k.upper(), e) for k, e in model.params.items()})
    vals.update({k: number(k.upper(), e) for k, e in el.params.items()})
    return vals


def _lumps(el, model, vals: dict[str, float]) -> int:
    """The line's lump count: the given N (rounded as ngspice reads an integer) or ngspice's rule;
    rejects what ngspice would turn into nonsense."""
    def bad(why: str) -> NetlistError:
        return NetlistError(f"{el.name}: {why}", el.loc.file, el.loc.line)

    if "l" not in el.params or vals["l"] <= 0:
        raise bad("a URC line needs a positive length L=")
    if vals["k"] <= 1:
        raise bad(f"model '{model.name}': K={vals['k']:g} must be above 1 (the sections grow by K)")
    if "n" in el.params:
        lumps = int(math.floor(0.5 + vals["n"]))
        if not 1 <= lumps <= MAX_LUMPS:
            raise bad(f"N={vals['n']:g} lumps: expected 1 to {MAX_LUMPS}")
        return lumps
    lumps = urc_lumps(vals["k"], vals["fmax"], vals["l"] * vals["rperl"], vals["l"] * vals["cperl"])
    if lumps > MAX_LUMPS:
        raise bad(f"{lumps} lumps (from FMAX, L, RPERL, CPERL): more than {MAX_LUMPS}")
    return lumps


def _expand_one(el, vals: dict[str, float], lumps: int, nodes: _Fresh, names: _Fresh,
                diode_model: str | None) -> list:
    """The R/C/D elements of one line (`diode_model`: the generated diode model's name, or None)."""
    from circuits.netlist import Element

    p, length = vals["k"], vals["l"]
    r0, c0 = length * vals["rperl"], length * vals["cperl"]
    r1 = (r0 * (p - 1)) / ((2 * (math.pow(p, lumps))) - 2)
    c1 = urc_sections(p, lumps, c0)
    base = f"u.{el.name}" if "." in el.name else el.name  # ngspice's flat instance name
    pos, neg, gnd = el.nodes

    def part(kind: str, tag: str, i: int, a: str, b: str, value: float) -> Element:
        name = names(f"{base}#{kind}{tag}{i}")
        if kind == "d":
            return Element("d", name, [a, b], el.loc, model=diode_model, params={"area": Expr.const(value)})
        return Element(kind, name, [a, b], el.loc, value=Expr.const(value))

    out, prop, left, right = [], 1.0, pos, neg
    shunt = "d" if diode_model else "c"
    for i in range(1, lumps + 1):
        hi = nodes(f"{base}#hi{i}")
        lo = hi if i == lumps else nodes(f"{base}#lo{i}")
        shunt_value = prop if diode_model else prop * c1  # a diode's size is its area
        out += [part("r", "lo", i, left, lo, prop * r1), part("r", "hi", i, hi, right, prop * r1),
                part(shunt, "lo", i, lo, gnd, shunt_value)]
        if i != lumps:
            out.append(part(shunt, "hi", i, hi, gnd, shunt_value))
        prop *= p
        left, right = lo, hi
    return out


def _diode_model(el, model, vals: dict[str, float], lumps: int, models: _Fresh):
    """The generated junction model of a line with ISPERL (ngspice's ``<instance>#diodemod``, here
    ``<instance>_diodemod`` with dots as underscores: a name the ngspice deck writer keeps)."""
    from circuits.netlist import Model

    p, length = vals["k"], vals["l"]
    params = {"cjo": urc_sections(p, lumps, length * vals["cperl"]),
              "is": urc_sections(p, lumps, length * vals["isperl"]),
              "rs": length * lumps * vals["rsperl"]}
    name = models(f"{el.name.replace('.', '_')}_diodemod")
    return Model(name, "d", {k: Expr.const(v) for k, v in params.items()}, model.loc)


def expand_urc_lines(nl) -> None:
    """Replace every U element of the flat netlist `nl` by its lumped sections (in place); the
    parameters the lines depend on join ``nl.fixed_params``."""
    lines = [el for el in nl.elements if el.kind == "u"]
    if not lines:
        return
    exprs = [e for el in lines for e in (*el.params.values(), *nl.models[el.model].params.values())]
    env = nl.resolve_params() if any(not e.is_constant for e in exprs) else {}
    nl.fixed_params |= _depends({n for e in exprs for n in e.names}, nl.params)
    nodes = _Fresh([*nl.nodes(), *nl.ic])
    names = _Fresh(el.name for el in nl.elements)
    models = _Fresh(nl.models)
    out = []
    for el in nl.elements:
        if el.kind != "u":
            out.append(el)
            continue
        model = nl.models[el.model]
        vals = _values(el, model, env)
        lumps = _lumps(el, model, vals)
        diode = None
        if "isperl" in model.params:
            diode = _diode_model(el, model, vals, lumps, models)
            nl.models[diode.name] = diode
        out += _expand_one(el, vals, lumps, nodes, names, diode and diode.name)
    nl.elements = out
