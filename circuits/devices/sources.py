"""Independent sources (V, I), linear controlled sources (E, G) and behavioural sources (B)."""

from __future__ import annotations

import torch
from torch import Tensor

from circuits import waveforms
from circuits.devices.base import Device, DeviceEval, register, two_terminal


def _wave_context(elements, env, tran) -> list[tuple[str, list]]:
    """Evaluate every instance's waveform arguments once per design batch."""
    ctx = []
    for el in elements:
        w = el.waveform
        args = [a.evaluate(env) for a in w.args] if w.kind != "dc" else [w.dc.evaluate(env)]
        ctx.append((w.kind, args))
    return ctx


def _varies_in_time(ctx) -> bool:
    return any(kind != "dc" for kind, _ in ctx[0])


def _source_values(ctx, t: Tensor, tran: dict, like: Tensor) -> Tensor:
    """Stack the waveform values of all instances at time t -> (..., n_inst) shaped like `like`."""
    vals = [waveforms.evaluate(kind, args, t if isinstance(t, Tensor) else like.new_tensor(t),
                               tstep=tran["tstep"], tstop=tran["tstop"]) for kind, args in ctx]
    return torch.stack([torch.broadcast_to(x, like.shape[:-1]) for x in vals], dim=-1)


# ngspice's other names for a source's waveform parameters (vsrc.c, isrc.c)
_WAVE_ALIASES = {"sine": "sin"}


class IndependentSource(Device):
    """What V and I share: a waveform, which ngspice's ``alter`` may replace (``@v1[pulse] = [..]``)
    or whose DC value it may set (``dc``: the transient's value only for a DC source, as in
    vsrcload.c, where the operating point before a transient uses the waveform at t = 0)."""

    linear = True
    independent_source = True
    alter_params = {"dc": "dc"}

    def prepare(self, elements, env, tran):
        return _wave_context(elements, env, tran), tran

    def time_dependent(self, ctx) -> bool:
        return _varies_in_time(ctx)

    def alter(self, element, param: str, values: list[float]):
        from dataclasses import replace

        from circuits.expr import Expr
        from circuits.netlist import Waveform

        param = _WAVE_ALIASES.get(param, param)
        consts = [Expr.const(v) for v in values]
        old = element.waveform
        if self.alter_params.get(param) == "dc":
            if len(values) != 1:
                return f"parameter '{param}' takes one value, got {len(values)}"
            wave = Waveform("dc", consts, consts[0]) if old.kind == "dc" else Waveform(old.kind, old.args, consts[0])
            return replace(element, waveform=wave)
        if param not in waveforms.ARITY or param == "dc":
            return (f"parameter '{param}' cannot be altered (alterable: "
                    f"{', '.join([*self.alter_params, *(k for k in waveforms.ARITY if k != 'dc')])})")
        why = waveforms.check_args(param, values)
        if why:
            return why
        return replace(element, waveform=Waveform(param, consts, old.dc))


@register
class VoltageSource(IndependentSource):
    """V n+ n- waveform: branch current i (into n+, as ngspice's i(v)) with v+ - v- = V(t)."""

    letter = "v"
    states = ("i",)
    pins_voltage = True

    def evaluate(self, v, s, t, p, ctx=None):
        waves, tran = ctx
        value = _source_values(waves, t, tran, v[..., 0])
        return DeviceEval(i=two_terminal(s[..., 0]),
                          fs=(v[..., 0] - v[..., 1] - value).unsqueeze(-1))

    def state_scales(self, p):
        return None


@register
class CurrentSource(IndependentSource):
    """I n+ n- waveform: current I(t) flows from n+ through the source to n-."""

    letter = "i"
    alter_params = {"dc": "dc", "c": "dc"}

    def evaluate(self, v, s, t, p, ctx=None):
        waves, tran = ctx
        return DeviceEval(i=two_terminal(_source_values(waves, t, tran, v[..., 0])))


@register
class VCVS(Device):
    """E n+ n- nc+ nc- gain: v+ - v- = gain (vc+ - vc-), with a branch-current state."""

    letter = "e"
    linear = True
    terminals = 4
    states = ("i",)
    instance_params = {"value": 1.0}

    def evaluate(self, v, s, t, p, ctx=None):
        i = s[..., 0]
        zero = torch.zeros_like(i)
        residual = v[..., 0] - v[..., 1] - p["value"] * (v[..., 2] - v[..., 3])
        return DeviceEval(i=torch.stack((i, -i, zero, zero), -1), fs=residual.unsqueeze(-1))


@register
class VCCS(Device):
    """G n+ n- nc+ nc- gm: current gm (vc+ - vc-) flows from n+ through the source to n-."""

    letter = "g"
    linear = True
    terminals = 4
    instance_params = {"value": 1.0}

    def evaluate(self, v, s, t, p, ctx=None):
        i = p["value"] * (v[..., 2] - v[..., 3])
        zero = torch.zeros_like(i)
        return DeviceEval(i=torch.stack((i, -i, zero, zero), -1))


@register
class CCCS(Device):
    """F n+ n- vname gain: current gain i(vname) flows from n+ through the source to n-."""

    letter = "f"
    linear = True
    terminals = 2
    instance_params = {"value": 1.0}

    def evaluate(self, v, s, t, p, ctx=None):
        i = p["value"] * v[..., 2]  # v[..., 2]: the controlling source's current
        return DeviceEval(i=torch.stack((i, -i, torch.zeros_like(i)), -1))


@register
class CCVS(Device):
    """H n+ n- vname r: v+ - v- = r i(vname), with a branch-current state."""

    letter = "h"
    linear = True
    terminals = 2
    states = ("i",)
    instance_params = {"value": 1.0}

    def evaluate(self, v, s, t, p, ctx=None):
        i = s[..., 0]
        residual = v[..., 0] - v[..., 1] - p["value"] * v[..., 2]
        return DeviceEval(i=torch.stack((i, -i, torch.zeros_like(i)), -1), fs=residual.unsqueeze(-1))


def control_nodes(element) -> list[str]:
    """Nodes read by a B source's expression that are not already its terminals."""
    extra: list[str] = []
    for a, b in element.behavior[1].nodes:
        for n in (a, b):
            if n != "0" and n not in element.nodes and n not in extra:
                extra.append(n)
    return extra


@register
class Behavioral(Device):
    """B n+ n- I=expr | V=expr: arbitrary differentiable expression of v(...), time and params.

    Each B element forms its own group; its terminals are n+, n- and then every node the expression
    reads (see `control_nodes`).  Each distinct ddt(x) call is an internal state y with
    d x/dt - y = 0 (y = 0 at the DC point).  (ngspice 39's ddt is a lagged difference quotient of
    accepted points, ptfuncs.c PTddt: this is the derivative it approximates.)
    """

    letter = "b"
    terminals = None
    per_instance = True

    def prepare(self, elements, env, tran):
        (el,) = elements
        names = list(el.nodes) + control_nodes(el)
        return el.behavior[0], el.behavior[1], {n: k for k, n in enumerate(names)}, env

    def nodes_for(self, element) -> list[str]:
        return list(element.nodes) + control_nodes(element)

    def states_for(self, element, model=None) -> tuple[str, ...]:
        kind, expr = element.behavior
        dynamic = tuple(f"{fn}{k}" for k, (fn, _) in enumerate(expr.dynamic))
        return (("i",) if kind == "v" else ()) + dynamic

    def local_jacobian(self, v, s, t, p, ctx=None):
        # a comparison's derivative is zero (ngspice's PTdifferentiate): the perturbed evaluations
        # of the forward differences reuse the outcomes at the unperturbed point
        if not ctx[1].has_comparisons:
            return super().local_jacobian(v, s, t, p, ctx)
        with ctx[1].frozen_comparisons():
            return super().local_jacobian(v, s, t, p, ctx)

    def evaluate(self, v, s, t, p, ctx=None):
        kind, expr, index, env = ctx
        vi = v[..., 0, :]

        def volt(a: str, b: str) -> Tensor:
            va = vi[..., index[a]] if a != "0" else torch.zeros_like(vi[..., 0])
            vb = vi[..., index[b]] if b != "0" else torch.zeros_like(vi[..., 0])
            return va - vb

        first = 1 if kind == "v" else 0  # the dynamic calls' states follow the branch current
        dynamic = {node: s[..., 0, first + k] for k, (_, node) in enumerate(expr.dynamic)}
        val = expr.evaluate(env, v=volt, time=t, dynamic=dynamic)
        shape = vi.shape[:-1]
        val = torch.broadcast_to(torch.as_tensor(val, dtype=v.dtype), shape).unsqueeze(-1)
        n = v.shape[-1]
        fs, qs = [], []
        if kind == "i":
            cur = torch.cat([val, -val, torch.zeros(*val.shape[:-1], n - 2, dtype=v.dtype)], -1).unsqueeze(-2)
        else:
            i = s[..., 0]
            cur = torch.cat([i.unsqueeze(-1), -i.unsqueeze(-1), torch.zeros(*i.shape, n - 2, dtype=v.dtype)], -1)
            fs.append((v[..., 0] - v[..., 1] - val)[..., 0])
            qs.append(torch.zeros(shape, dtype=v.dtype))
        if not expr.dynamic:
            return DeviceEval(i=cur, fs=torch.stack(fs, -1).unsqueeze(-2) if fs else None)
        args = expr.dynamic_arguments(env, v=volt, time=t, dynamic=dynamic)
        for (fn, node), arg in zip(expr.dynamic, args):
            x = torch.broadcast_to(torch.as_tensor(arg[0], dtype=v.dtype), shape)
            y = dynamic[node]
            fs.append(-y)
            qs.append(x)
        return DeviceEval(i=cur, fs=torch.stack(fs, -1).unsqueeze(-2), qs=torch.stack(qs, -1).unsqueeze(-2))
