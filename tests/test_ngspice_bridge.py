"""ngspice bridge: deck writer, runner, raw reader (needs the ngspice binary; ~1-2 s in total)."""

from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from circuits import ngspice as ng
from circuits.errors import NgspiceError

needs_ngspice = pytest.mark.skipif(not ng.ngspice_available(), reason="ngspice not installed")
pytestmark = pytest.mark.ngspice


# --------------------------------------------------------------------------------------------------
# Hand-built netlists.  Plain numbers stand in for `Expr` (the writer accepts both); `_P` is a
# parameter reference and `_B` a behavioural expression, both duck-typing the `Expr` interface.

class _P:
    def __init__(self, name: str):
        self.name = name

    def evaluate(self, env):
        return env[self.name]


class _B:
    """Expression text with ``{node}`` placeholders for node names and ``[param]`` for params."""

    def __init__(self, text: str, nodes: dict[str, str]):
        self.text, self.nodes = text, nodes

    def to_text(self, params=None, node_name=lambda n: n):
        out = self.text.format(**{k: node_name(v) for k, v in self.nodes.items()})
        for k, v in (params or {}).items():
            out = out.replace(f"[{k}]", repr(float(v)))
        return out


def _el(kind, name, nodes, **kw):
    return SimpleNamespace(kind=kind, name=name, nodes=list(nodes), value=kw.get("value"),
                           waveform=kw.get("waveform"), model=kw.get("model"),
                           params=kw.get("params", {}), behavior=kw.get("behavior"))


def _wf(kind, *args, dc=None):
    return SimpleNamespace(kind=kind, args=list(args), dc=dc)


def _netlist(elements, models=None, ic=None, title="test"):
    def nodes():
        seen = {}
        for e in elements:
            for n in e.nodes:
                if n != "0":
                    seen.setdefault(n, None)
        return list(seen)

    return SimpleNamespace(title=title, elements=elements, models=models or {}, params={},
                           ic=ic or {}, tran=None, nodes=nodes)


# RC low-pass driven by a trapezoidal pulse; exact solution segment by segment.
R, C = 1e3, 1e-9
TD, TR, TF, PW, PER = 1e-7, 1e-9, 2e-9, 2e-6, 1e-5


def _rc_exact(t):
    bps = [0.0, TD, TD + TR, TD + TR + PW, TD + TR + PW + TF, PER]
    vin = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    tau = R * C
    out = np.empty_like(t)
    for k, tt in enumerate(t):
        v = 0.0
        for i in range(len(bps) - 1):
            a, b = bps[i], bps[i + 1]
            if tt <= a:
                break
            h = min(tt, b) - a
            s = (vin[i + 1] - vin[i]) / (b - a)
            u0 = vin[i]
            v = (u0 + s * h) - s * tau + (v - u0 + s * tau) * math.exp(-h / tau)
        out[k] = v
    return out


def _rc_netlist(hier=False):
    pre = "x1." if hier else ""
    return _netlist([
        _el("v", "vin", ["in", "0"], waveform=_wf("pulse", 0, _P("vhi"), TD, TR, TF, PW, PER)),
        _el("r", pre + "r1", ["in", pre + "out"], value=_P("rval")),
        _el("c", pre + "c1", [pre + "out", "0"], value=C),
    ])


@needs_ngspice
def test_rc_pulse_matches_analytic():
    df = ng.netlist_run(_rc_netlist(), {"vhi": 1.0, "rval": R}, ["v(out)", "i(vin)"],
                        tstep=1e-8, tstop=5e-6)
    t = df["time"].to_numpy()
    assert list(df.columns) == ["time", "v(out)", "i(vin)"]
    assert t[0] == 0.0 and t[-1] == pytest.approx(5e-6, rel=1e-12)
    err = np.abs(df["v(out)"].to_numpy() - _rc_exact(t)).max()
    assert err < 1e-4          # measured ~3e-6 of the 1 V swing (defaults)
    # i(vin): ngspice's convention, current into the + terminal through the source.
    vin = np.interp(t, [0, TD, TD + TR, 1], [0, 0, 1, 1])
    i_exact = -(vin - _rc_exact(t)) / R
    mid = (t > TD + 5 * TR) & (t < TD + PW)
    assert np.abs(df["i(vin)"].to_numpy()[mid] - i_exact[mid]).max() < 1e-4 / R
    assert df.attrs["wall_s"] > 0 and df.attrs["n_points"] == len(df)


@needs_ngspice
def test_resample_and_tight_tmax():
    times = np.linspace(0, 5e-6, 501)
    df = ng.netlist_run(_rc_netlist(), {"vhi": 1.0, "rval": R}, ["v(out)"], tstep=1e-8,
                        tstop=5e-6, times=times, tmax=2e-9)
    assert np.array_equal(df["time"].to_numpy(), times)
    assert np.abs(df["v(out)"].to_numpy() - _rc_exact(times)).max() < 1e-4


def test_deck_is_numeric_and_tight():
    deck = ng.netlist_to_ngspice(_rc_netlist(), {"vhi": 1.8, "rval": 2e3}, tstep=1e-8,
                                 tstop=5e-6, uic=True, outputs=["v(out)"])
    lines = deck.splitlines()
    assert "vin in 0 pulse(0 1.8 1e-07 1e-09 2e-09 2e-06 1e-05)" in lines
    assert "r1 in out 2000" in lines
    assert ".tran 1e-08 5e-06 0 1e-08 uic" in lines
    opts = next(ln for ln in lines if ln.startswith(".options"))
    for item in ("reltol=1e-07", "abstol=1e-15", "vntol=1e-09", "chgtol=1e-18", "trtol=1",
                 "method=trap"):
        assert item in opts
    assert "write out.raw v(out)" in lines
    trap = ng.netlist_to_ngspice(_rc_netlist(), {"vhi": 1.0, "rval": R}, tstep=1e-8, tstop=5e-6,
                                 uic=False, outputs=["v(out)"], tmax=1e-9,
                                 options={"method": "gear", "maxord": 2, "trtol": None})
    assert "method=gear maxord=2" in trap and "trtol" not in trap
    assert ".tran 1e-08 5e-06 0 1e-09\n" in trap
    plain = ng.netlist_to_ngspice(_rc_netlist(), {"vhi": 1.0, "rval": R}, tstep=1e-8, tstop=5e-6,
                                  uic=False, outputs=["v(out)"], options="ngspice")
    assert ".options" not in plain


@needs_ngspice
def test_divider_with_b_source_and_currents():
    nl = _netlist([
        _el("v", "v1", ["a", "0"], waveform=_wf("dc", 2.0)),
        _el("r", "r1", ["a", "b"], value=1e3),
        _el("r", "r2", ["b", "0"], value=1e3),
        # current source from ground into c: i = v(b)/k  ->  v(c) = v(b) * 2k / k = 2 V
        _el("b", "b1", ["0", "c"], behavior=("i", _B("v({b})/[k]", {"b": "b"}))),
        _el("r", "r3", ["c", "0"], value=2e3),
        _el("b", "b2", ["d", "0"], behavior=("v", _B("v({a},{b})*3+time*0", {"a": "a", "b": "b"}))),
        _el("r", "r4", ["d", "0"], value=1e3),
    ])
    outs = ["v(b)", "v(c)", "v(a,b)", "v(b,0)", "v(0,b)", "i(v1)", "i(r1)", "i(b1)", "v(d)", "i(b2)"]
    df = ng.netlist_run(nl, {"k": 1e3}, outs, tstep=1e-9, tstop=1e-8)
    last = df.iloc[-1]
    assert last["v(b)"] == pytest.approx(1.0, rel=1e-9)
    assert last["v(c)"] == pytest.approx(2.0, rel=1e-9)
    assert last["v(a,b)"] == pytest.approx(1.0, rel=1e-9)
    assert last["v(b,0)"] == pytest.approx(1.0, rel=1e-9)
    assert last["v(0,b)"] == pytest.approx(-1.0, rel=1e-9)
    assert last["i(v1)"] == pytest.approx(-1e-3, rel=1e-9)   # source delivers 1 mA
    assert last["i(r1)"] == pytest.approx(1e-3, rel=1e-9)    # a -> b through r1
    assert last["i(b1)"] == pytest.approx(1e-3, rel=1e-9)    # into first terminal (0) -> c
    assert last["v(d)"] == pytest.approx(3.0, rel=1e-9)
    assert last["i(b2)"] == pytest.approx(-3e-3, rel=1e-9)   # B voltage source: like a V source


@needs_ngspice
def test_pwl_corners_exact():
    pts = [(0.0, 0.0), (1e-7, 0.0), (2e-7, 1.5), (5e-7, 1.5), (5.5e-7, -0.3), (8e-7, 0.7)]
    args = [x for p in pts for x in p]
    nl = _netlist([_el("v", "vp", ["p", "0"], waveform=_wf("pwl", *args)),
                   _el("r", "rl", ["p", "0"], value=1e3)])
    df = ng.netlist_run(nl, {}, ["v(p)"], tstep=1e-8, tstop=1e-6)
    t, v = df["time"].to_numpy(), df["v(p)"].to_numpy()
    for tc, vc in pts:
        k = np.flatnonzero(np.abs(t - tc) <= 1e-18 + 1e-12 * tc)
        assert k.size, f"corner t={tc} not among ngspice's time points"
        assert np.allclose(v[k], vc, rtol=0, atol=1e-12)
    assert np.allclose(v, np.interp(t, [p[0] for p in pts] + [1e-6], [p[1] for p in pts] + [0.7]),
                       atol=1e-12)


@needs_ngspice
def test_sin_source():
    vo, va, f, td, theta, phase = 0.5, 1.2, 2e6, 1e-7, 1e5, 30.0
    nl = _netlist([_el("v", "vs", ["s", "0"], waveform=_wf("sin", vo, va, f, td, theta, phase)),
                   _el("r", "rl", ["s", "0"], value=1e3)])
    df = ng.netlist_run(nl, {}, ["v(s)"], tstep=1e-9, tstop=2e-6)
    t = df["time"].to_numpy()
    loc = np.clip(t - td, 0, None)
    ref = vo + va * np.exp(-loc * theta) * np.sin(2 * np.pi * f * loc + np.radians(phase))
    assert np.abs(df["v(s)"].to_numpy() - ref).max() < 1e-9


@needs_ngspice
def test_hierarchical_names_map_back():
    nl = _rc_netlist(hier=True)
    outs = ["v(x1.out)", "i(x1.r1)", "i(x1.c1)"]
    deck = ng.build_deck(nl, {"vhi": 1.0, "rval": R}, tstep=1e-8, tstop=3e-6, uic=False,
                         outputs=outs)
    assert deck.element_map["x1.r1"] == "r.x1.r1" and deck.node_map["x1.out"] == "x1.out"
    df = ng.run_deck(deck)
    assert list(df.columns) == ["time", *outs]
    t = df["time"].to_numpy()
    assert np.abs(df["v(x1.out)"].to_numpy() - _rc_exact(t)).max() < 1e-4
    # the resistor current charges the capacitor
    late = t > TD + 10 * TR
    assert np.allclose(df["i(x1.r1)"].to_numpy()[late], df["i(x1.c1)"].to_numpy()[late],
                       atol=1e-9)


@needs_ngspice
def test_python_device_state_contract():
    """A toy Python device (state x: dx/dt = (v(a,b) - x)/tau) written the way `lk` must be."""
    from circuits.devices.base import Device, _BY_MODEL

    class Lag(Device):
        model_types = ("_ngspice_test_lag",)
        terminals = 2
        states = ("x",)
        model_params = {"tau": 1e-6}
        instance_params = {"x0": 0.0}

        def ngspice_lines(self, name, nodes, model, inst):
            a, b = nodes
            return [f"b{name}_x 0 {name}_x i=(v({a},{b})-v({name}_x))/{model['tau']!r}",
                    f"c{name}_x {name}_x 0 1",
                    f"r{name}_load {a} {b} 1e6",
                    f".ic v({name}_x)={inst['x0']!r}"]

    _BY_MODEL["_ngspice_test_lag"] = Lag()
    try:
        nl = _netlist(
            [_el("v", "vin", ["a", "0"], waveform=_wf("dc", 1.0)),
             _el("n", "x1.n1", ["a", "0"], model="lag", params={"x0": 0.25})],
            models={"lag": SimpleNamespace(name="lag", type="_ngspice_test_lag",
                                           params={"tau": 2e-7})})
        deck = ng.build_deck(nl, {}, tstep=1e-9, tstop=1e-6, uic=True, outputs=["x1.n1.x"])
        assert "v(x1_n1_x)" in deck.vectors
        df = ng.run_deck(deck)
        t = df["time"].to_numpy()
        ref = 1.0 + (0.25 - 1.0) * np.exp(-t / 2e-7)
        assert np.abs(df["x1.n1.x"].to_numpy() - ref).max() < 1e-4
    finally:
        del _BY_MODEL["_ngspice_test_lag"]


def test_missing_ngspice_raises_install_hint(monkeypatch):
    monkeypatch.delenv("NGSPICE", raising=False)
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    assert not ng.ngspice_available()
    with pytest.raises(NgspiceError, match="apt-get install -y ngspice") as info:
        ng.netlist_run(_rc_netlist(), {"vhi": 1.0, "rval": R}, ["v(out)"], tstep=1e-8,
                       tstop=1e-6)
    assert "\n" not in str(info.value)


@needs_ngspice
def test_deck_error_raises():
    nl = _netlist([_el("v", "v1", ["a", "0"], waveform=_wf("dc", 1.0)),
                   _el("d", "d1", ["a", "0"], model="nosuch")],
                  models={"nosuch": SimpleNamespace(name="nosuch", type="q", params={})})
    with pytest.raises(NgspiceError, match="ngspice failed"):
        ng.netlist_run(nl, {}, ["v(a)"], tstep=1e-9, tstop=1e-8)


@needs_ngspice
def test_run_stopping_before_tstop_is_an_error():
    deck = ng.build_deck(_rc_netlist(), {"vhi": 1.0, "rval": R}, tstep=1e-8, tstop=1e-6,
                         uic=False, outputs=["v(out)"])
    deck.tstop = 2e-6           # as if ngspice had given up half way ("timestep too small")
    with pytest.raises(NgspiceError, match="stopped at t=1e-06"):
        ng.run_deck(deck)


@needs_ngspice
def test_ignored_model_parameter_is_an_error():
    nl = _netlist([_el("v", "v1", ["a", "0"], waveform=_wf("dc", 1.0)),
                   _el("r", "r1", ["a", "k"], value=1e3),
                   _el("d", "d1", ["k", "0"], model="dm")],
                  models={"dm": SimpleNamespace(name="dm", type="d",
                                                params={"is": 1e-14, "bogus": 3.0})})
    with pytest.raises(NgspiceError, match="bogus"):
        ng.netlist_run(nl, {}, ["v(k)"], tstep=1e-9, tstop=1e-8)
    df = ng.netlist_run(nl, {}, ["v(k)"], tstep=1e-9, tstop=1e-8, strict=False)
    assert df.attrs["warnings"]


def test_unknown_output_is_a_config_error():
    from circuits.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown node"):
        ng.netlist_to_ngspice(_rc_netlist(), {"vhi": 1.0, "rval": R}, tstep=1e-8, tstop=1e-6,
                              uic=False, outputs=["v(nowhere)"])


@needs_ngspice
def test_version():
    assert ng.ngspice_version()[0].isdigit()


@needs_ngspice
def test_run_ngspice_batch_on_a_circuit():
    nl = _rc_netlist()

    class Circ:
        name, netlist, outputs, tstep, tstop, uic = "rc", nl, ["v(out)"], 1e-8, 2e-6, False

        def param_values(self, params=None):
            return {"vhi": 1.0, "rval": R, **(params or {})}

    designs = [{"rval": 1e3}, {"rval": 2e3}, {"rval": 4e3}]
    frames = ng.run_ngspice_batch(Circ(), designs, progress=False, jobs=2)
    assert len(frames) == 3
    finals = [f["v(out)"].iloc[-1] for f in frames]
    assert finals[0] > finals[1] > finals[2]          # larger R -> slower charging
    assert np.all(ng.batch_wall_times(frames) > 0)
    single = ng.run_ngspice(Circ(), {"rval": 2e3})
    assert np.array_equal(single["v(out)"].to_numpy(), frames[1]["v(out)"].to_numpy())


SUBCKT_NETLIST = """subckt flattening
.param rhalf=500 k=1k
.subckt stage in out
R1 in mid {rhalf}
R2 mid out {rhalf}
C1 out 0 1n
B1 0 bo I=v(mid)/k
RB bo 0 1k
.ends
V1 a 0 PULSE(0 1 100n 1n 2n 2u 10u)
X1 a b stage
.tran 10n 3u
.end
"""


@needs_ngspice
def test_parsed_subckt_internal_nodes_map_back():
    from circuits.netlist import parse_netlist

    nl = parse_netlist(SUBCKT_NETLIST)
    values = {k: float(v) for k, v in nl.resolve_params().items()}
    outs = ["v(x1.mid)", "v(b)", "i(x1.r1)", "v(x1.bo)"]
    df = ng.netlist_run(nl, values, outs, tstep=nl.tran.tstep, tstop=nl.tran.tstop, uic=nl.tran.uic)
    assert list(df.columns) == ["time", *outs]
    t = df["time"].to_numpy()
    vin = np.interp(t, [0, TD, TD + TR, TD + TR + PW, TD + TR + PW + TF, 1],
                    [0, 0, 1, 1, 0, 0])
    vb = df["v(b)"].to_numpy()
    assert np.abs(vb - _rc_exact(t)).max() < 1e-4
    assert np.allclose(df["v(x1.mid)"], (vin + vb) / 2, atol=1e-6)
    assert np.allclose(df["v(x1.bo)"], df["v(x1.mid)"], atol=1e-9)
    assert np.allclose(df["i(x1.r1)"], (vin - df["v(x1.mid)"]) / 500, atol=1e-8)
