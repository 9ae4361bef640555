"""Tests of circuits.netlist.parse_netlist: every card, flattening, includes and every error path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from circuits.devices.base import device_for_model_type
from circuits.errors import NetlistError
from circuits.netlist import Netlist, parse_file, parse_netlist

RING = """ring5 test
.param cload=10f wn=1u wp=2u
.model nch nmos level=1 vto=0.5 kp=200u lambda=0.05
.model pch pmos level=1 vto=-0.5 kp=100u lambda=0.05
.subckt inv in out vdd
MP out in vdd vdd pch w={wp} l=1u
MN out in 0 0 nch w={wn} l=1u
CL out 0 {cload}
.ends inv
VDD vdd 0 1.8
X1 n5 n1 vdd inv
X2 n1 n2 vdd inv
X3 n2 n3 vdd inv
X4 n3 n4 vdd inv
X5 n4 n5 vdd inv
.ic v(n1)=0 v(n2)=1.8 v(n3)=0 v(n4)=1.8 v(n5)=0.9
.tran 1p 4n uic
.end
"""

FERAM = """feram cell
.param tfe=10n area=1e-12 vdd=2.5
.model hzo lk alpha=-1e9 beta=2.4e10 gamma=0 rho=0.25 epsr=30
.model nch nmos level=1 vto=0.5 kp=200u
N1 fe pl hzo tfe={tfe} area={area} p0=-0.144338
M1 bl wl fe 0 nch w=1u l=100n
CBL bl 0 100f
VWL wl 0 PWL(0 0 1n 0 1.1n {vdd} 19n {vdd} 19.1n 0)
VPL pl 0 DC 0 PULSE(0 {vdd} 2n 0.1n 0.1n 5n 20n)
VIN in 0 SIN(0.8 0.1 1G)
RIN in bl 1k
.tran 10p 20n
"""


def parse(body: str, file: str = "deck.sp") -> Netlist:
    """Parse a netlist whose title is 'title' and whose remaining lines are ``body``."""
    return parse_netlist("title\n" + body, file=file)


def expect_error(body: str, line: int, match: str, file: str = "deck.sp") -> NetlistError:
    """Parsing ``body`` (line 2 onwards) raises a one-line NetlistError at ``file:line``."""
    with pytest.raises(NetlistError) as info:
        parse(body, file)
    msg = str(info.value)
    assert msg.startswith(f"{file}:{line}: "), msg
    assert re.search(match, msg), msg
    assert "\n" not in msg
    return info.value


# ------------------------------------------------------------------------------------- parsing


def test_ring_oscillator() -> None:
    nl = parse_netlist(RING, file="ring.sp")
    assert nl.title == "ring5 test" and nl.file == "ring.sp"
    assert [e.name for e in nl.elements[:4]] == ["vdd", "x1.mp", "x1.mn", "x1.cl"]
    assert len(nl.elements) == 16
    mp = nl.element("X1.MP")
    assert mp.kind == "m" and mp.nodes == ["n1", "n5", "vdd", "vdd"] and mp.model == "pch"
    assert mp.params["w"].names == {"wp"} and mp.params["l"].value() == 1e-6
    assert mp.loc.file == "ring.sp" and mp.loc.line == 6
    assert nl.element("x3.mn").nodes == ["n3", "n2", "0", "0"]
    assert nl.element("x5.cl").value.names == {"cload"}
    assert list(nl.params) == ["cload", "wn", "wp"]
    assert nl.resolve_params() == {"cload": 1e-14, "wn": 1e-6, "wp": 2e-6}
    assert set(nl.models) == {"nch", "pch"} and nl.models["pch"].type == "pmos"
    assert nl.models["nch"].params["kp"].value() == pytest.approx(200e-6)
    assert {k: v.value() for k, v in nl.ic.items()} == {"n1": 0, "n2": 1.8, "n3": 0, "n4": 1.8, "n5": 0.9}
    assert nl.tran.tstep == 1e-12 and nl.tran.tstop == 4e-9 and nl.tran.uic
    assert nl.tran.tstart == 0.0 and nl.tran.tmax is None
    assert nl.nodes() == ["vdd", "n1", "n5", "n2", "n3", "n4"]


def test_feram_cell() -> None:
    nl = parse_netlist(FERAM)
    n1 = nl.element("n1")
    assert n1.kind == "n" and n1.nodes == ["fe", "pl"] and n1.model == "hzo"
    assert n1.params["p0"].value() == -0.144338
    wl = nl.element("vwl").waveform
    assert wl.kind == "pwl" and len(wl.args) == 10 and wl.dc is None
    assert wl.args[5].names == {"vdd"} and wl.args[4].value() == pytest.approx(1.1e-9)
    pl = nl.element("vpl").waveform
    assert pl.kind == "pulse" and pl.dc.value() == 0.0 and len(pl.args) == 7
    sin = nl.element("vin").waveform
    assert sin.kind == "sin" and [a.value() for a in sin.args] == [0.8, 0.1, 1e9]
    assert nl.tran.tmax is None and not nl.tran.uic


@pytest.mark.parametrize("card, kind, args, dc", [
    ("V1 a 0 1.8", "dc", [1.8], 1.8),
    ("V1 a 0 DC 1.8", "dc", [1.8], 1.8),
    ("V1 a 0 dc {2*k}", "dc", [4.0], 4.0),
    ("I1 a 0 -1m AC 1", "dc", [-1e-3], -1e-3),
    ("V1 a 0 AC 1 0 DC 2", "dc", [2.0], 2.0),
    ("V1 a 0 pulse 0 1 2n", "pulse", [0, 1, 2e-9], None),
    ("V1 a 0 PULSE (0 1 2n 1p 1p 1n 5n)", "pulse", [0, 1, 2e-9, 1e-12, 1e-12, 1e-9, 5e-9], None),
    ("V1 a 0 dc 0.5 sin(0.5, 0.1, 1meg) ac 1", "sin", [0.5, 0.1, 1e6], 0.5),
    ("V1 a 0 SIN(0 1 1k 1n 10 90)", "sin", [0, 1, 1e3, 1e-9, 10, 90], None),
    ("V1 a 0 PWL(0,0 1n,1 1n,2)", "pwl", [0, 0, 1e-9, 1, 1e-9, 2], None),
    ("V1 a 0 pwl 0 0 {k} 1", "pwl", [0, 0, 2, 1], None),
    ("I1 a 0 PWL(0 0)", "pwl", [0, 0], None),
])
def test_sources(card: str, kind: str, args: list[float], dc: float | None) -> None:
    nl = parse(f".param k=2\n{card}\nR1 a 0 1\n")
    wave = nl.elements[0].waveform
    env = nl.resolve_params()
    assert wave.kind == kind
    assert [a.evaluate(env) for a in wave.args] == pytest.approx(args)
    assert (wave.dc.evaluate(env) if wave.dc is not None else None) == (pytest.approx(dc) if dc is not None else None)


def test_passives_and_controlled_sources() -> None:
    nl = parse("R1 a b 10k\nC1 b 0 10pF ic=0.5\nL1 a GND 1uH IC=1m\nE1 c 0 a b 2\nG1 0 c a b 1m\nRc c 0 1\n")
    assert nl.element("r1").value.value() == 1e4 and nl.element("r1").params == {}
    c1 = nl.element("c1")
    assert c1.value.value() == 1e-11 and c1.params["ic"].value() == 0.5
    assert nl.element("l1").nodes == ["a", "0"] and nl.element("l1").params["ic"].value() == 1e-3
    e1 = nl.element("e1")
    assert e1.kind == "e" and e1.nodes == ["c", "0", "a", "b"] and e1.value.value() == 2.0
    assert nl.element("g1").value.value() == 1e-3


def test_behavioral_sources() -> None:
    nl = parse(".param g=2\nB1 out 0 V = v(in) * {g} + time\nB2 0 out I={v(in,out)/1k}\n"
               "B3 x 0 v='max(v(in), 0)'\nR1 in 0 1\nR2 x 0 1\n")
    kind, e = nl.element("b1").behavior
    assert kind == "v" and e.nodes == (("in", "0"),) and e.uses_time and e.names == {"g"}
    kind, e = nl.element("b2").behavior
    assert kind == "i" and e.nodes == (("in", "out"),)
    assert e.evaluate({}, v=lambda a, b: 2.0) == pytest.approx(2e-3)
    assert nl.element("b3").behavior[1].evaluate({}, v=lambda a, b: -1.0) == 0.0


def test_diode_and_model_syntaxes() -> None:
    nl = parse("D1 a 0 dm 2\nD2 a b DM area={k}\nR1 b 0 1\n.param k=3\n.model DM D(is=1e-14 n=1.5)\n"
               ".model m2 nmos (level=1, vto=0.4)\n.model m3 pmos(vto=-0.4 kp=1e-5)\n")
    assert nl.element("d1").params["area"].value() == 2.0 and nl.element("d1").model == "dm"
    assert nl.element("d2").params["area"].names == {"k"}
    assert nl.models["dm"].type == "d" and nl.models["dm"].params["n"].value() == 1.5
    assert nl.models["m2"].params["vto"].value() == 0.4
    assert nl.models["m3"].type == "pmos" and nl.models["dm"].loc.line == 6


def test_comments_continuations_and_case() -> None:
    nl = parse("* a comment\nR1 A B ; trailing comment\n+ 1K $ dollar comment\n  * indented comment\n"
               "C1 b 0\n* comment between continuation lines\n+ 1p\nV1 a 0 PULSE(0 1\n+ 1n)\n")
    r1 = nl.element("r1")
    assert r1.nodes == ["a", "b"] and r1.value.value() == 1e3 and r1.loc.line == 3
    assert nl.element("c1").loc.line == 6 and nl.element("c1").value.value() == 1e-12
    assert len(nl.element("v1").waveform.args) == 3


def test_end_stops_parsing_and_ignored_cards() -> None:
    nl = parse(".options reltol=1e-4\n.option abstol=1e-12\n.temp 27\nR1 a 0 1\n.end\nthis is not parsed\n")
    assert [e.name for e in nl.elements] == ["r1"]


def test_parameters_and_expressions() -> None:
    nl = parse(".param a=1k b={2*a} c='a+b'\n.param d = 3 e=2*d\nR1 x 0 {c/2}\nR2 x 0 'e*a'\nR3 x 0 e*2\n"
               "R4 x 0 {sqrt(a)*pow(2,3)}\n")
    assert list(nl.params) == ["a", "b", "c", "d", "e"]
    env = nl.resolve_params()
    assert env == {"a": 1e3, "b": 2e3, "c": 3e3, "d": 3.0, "e": 6.0}
    assert nl.element("r1").value.evaluate(env) == 1500.0
    assert nl.element("r2").value.evaluate(env) == 6000.0
    assert nl.element("r3").value.evaluate(env) == 12.0
    assert nl.element("r4").value.evaluate(env) == pytest.approx(8 * 1e3 ** 0.5)


def test_resolve_params_overrides() -> None:
    nl = parse(".param a=1 b={2*a}\n.subckt s p params: k={a}\nR1 p 0 {k*b}\n.ends\nX1 n s\nX2 n s k=5\n")
    assert list(nl.params) == ["a", "b", "x1.k", "x2.k"]
    env = nl.resolve_params({"a": torch.tensor([1.0, 2.0], requires_grad=True)})
    torch.testing.assert_close(env["b"], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(env["x1.k"], torch.tensor([1.0, 2.0]))
    assert env["x2.k"] == 5.0
    r = nl.element("x1.r1").value.evaluate(env)
    r.sum().backward()
    assert nl.resolve_params({"b": 10.0})["b"] == 10.0
    for bad in ("zz", "x1.k"):
        with pytest.raises(KeyError):
            nl.resolve_params({bad: 1.0})


def test_nested_subcircuits_with_params() -> None:
    nl = parse("""\
.param wg=1u scale=2
.model nch nmos level=1
.subckt buf in out vdd params: wn=1u
.param wl={2*wn}
.subckt half a b vdd2 wn2=3u
Mi b a 0 0 nch w={wn2*scale} l=1u
Ci b 0 {wg}
Bi b 0 I={v(a)*1m + v(vdd2, mid)*0}
Rmid mid 0 1
.ends half
X1 in mid vdd half wn2={wl}
X2 mid out vdd half
.ends buf
XB n1 n2 vd buf wn=5u
XC n2 n3 vd buf
V1 vd 0 1
""")
    mi = nl.element("xb.x1.mi")
    assert mi.nodes == ["xb.mid", "n1", "0", "0"]
    assert mi.params["w"].names == {"xb.x1.wn2", "scale"}
    assert nl.element("xb.x2.mi").nodes == ["n2", "xb.mid", "0", "0"]
    assert nl.element("xb.x1.rmid").nodes == ["xb.x1.mid", "0"]
    bi = nl.element("xb.x1.bi").behavior[1]
    assert set(bi.nodes) == {("n1", "0"), ("vd", "xb.x1.mid")}
    assert nl.element("xc.x2.ci").value.names == {"wg"}
    assert list(nl.params) == ["wg", "scale", "xb.wn", "xb.wl", "xb.x1.wn2", "xb.x2.wn2",
                               "xc.wn", "xc.wl", "xc.x1.wn2", "xc.x2.wn2"]
    env = nl.resolve_params()
    assert env["xb.wl"] == pytest.approx(10e-6) and env["xb.x1.wn2"] == pytest.approx(10e-6)
    assert env["xb.x2.wn2"] == pytest.approx(3e-6) and env["xc.x1.wn2"] == pytest.approx(2e-6)
    assert nl.resolve_params({"scale": 3.0})["scale"] == 3.0


def test_subckt_params_shadow_globals_and_ports_map() -> None:
    nl = parse(".param r=1\n.SUBCKT S a b r=5\nR1 a b {r}\nRg b GND {r}\nRm a mid 1\n.ENDS S\nX1 p q s\nRp p 0 {r}\n"
               "X2 p q S PARAMS: r={2*r}\nB1 1 0 V=v(1)+v(x1.mid)\n")
    assert nl.element("x1.r1").value.names == {"x1.r"}
    assert nl.resolve_params() == {"r": 1.0, "x1.r": 5.0, "x2.r": 2.0}
    assert nl.element("b1").behavior[1].nodes == (("1", "0"), ("x1.mid", "0"))
    assert nl.element("x1.rg").nodes == ["q", "0"]
    assert nl.element("rp").value.names == {"r"}


def test_includes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "models.lib").write_text("* models\n.model nch nmos level=1 vto=0.4\n"
                                                 ".include 'inner.inc'\n")
    (tmp_path / "sub" / "inner.inc").write_text(".param w0=2u\n")
    top = tmp_path / "top.sp"
    top.write_text('top\n.include "sub/models.lib"\nM1 d g 0 0 nch w={w0}\nV1 d 0 1\nV2 g 0 1\n')
    nl = parse_file(top)
    assert nl.models["nch"].loc == type(nl.models["nch"].loc)(str(tmp_path / "sub" / "models.lib"), 2)
    assert nl.element("m1").params["w"].names == {"w0"} and "w0" in nl.params
    nl2 = parse_netlist(top.read_text(), file="x.sp", base_dir=tmp_path)
    assert nl2.file == "x.sp" and len(nl2.elements) == 3


def test_include_with_upper_case_path(tmp_path: Path) -> None:
    (tmp_path / "Models.LIB").write_text(".model DM d\n")
    nl = parse_netlist("t\n.INCLUDE Models.LIB\nD1 a 0 dm\nR1 a 0 1\n", base_dir=tmp_path)
    assert "dm" in nl.models


def test_include_errors(tmp_path: Path) -> None:
    (tmp_path / "a.inc").write_text("* a\n.include b.inc\n")
    (tmp_path / "b.inc").write_text(".include a.inc\n")
    (tmp_path / "bad.inc").write_text("R1 a 0 1\n\nO1 a b c\n")
    (tmp_path / "self.sp").write_text("t\n.include self.sp\n")
    with pytest.raises(NetlistError, match=r"^deck\.sp:3: cannot read include file 'missing\.inc'"):
        parse_netlist("t\nR1 a 0 1\n.include missing.inc\n", file="deck.sp", base_dir=tmp_path)
    with pytest.raises(NetlistError, match=r"b\.inc:1: include cycle: a\.inc -> b\.inc -> a\.inc"):
        parse_netlist("t\n.include a.inc\n", file="deck.sp", base_dir=tmp_path)
    with pytest.raises(NetlistError, match=r"self\.sp:2: include cycle"):
        parse_file(tmp_path / "self.sp")
    with pytest.raises(NetlistError, match=r"bad\.inc:3: unknown element type 'o'"):
        parse_netlist("t\n.include bad.inc\n", file="deck.sp", base_dir=tmp_path)
    expect_error(".include\n", 2, "needs a file name")


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("body, line, match", [
    # structure and syntax
    ("R1 a 0 1\nO1 a b c model\n", 3, r"unknown element type 'o' \(o1\)"),
    ("+ R1 a 0 1\n", 2, "continuation line"),
    ("R1 a 0 1\n.lib foo\n", 3, r"unsupported control card \.lib"),
    ("R1 a 0 1\n.nodeset v(a)=1\n", 3, r"unsupported control card \.nodeset"),
    ("R1 a 0 1\n.ends\n", 3, r"\.ends without \.subckt"),
    ("R1 a 0 1\n.subckt s a\nR1 a 0 1\n", 3, r"unterminated \.subckt s"),
    ("R1 a 0 1\n.subckt s a\nR1 a 0 1\n.ends t\n", 5, "does not match"),
    ("* nothing\n.param a=1\n", 1, "no elements"),
    ("R1 a 0 1\nR1 b 0 1\n", 3, "duplicate element name 'r1'"),
    ("R1 a 0 {1+}\n", 2, "bad expression"),
    ("R1 a 0 1x2\n", 2, "bad expression '1x2'"),
    ("R1 a 0 {1\n", 2, r"unterminated '\{'"),
    ("R1 a 0 '1\n", 2, "unterminated"),
    ("R1 a 0 (1\n", 2, r"unbalanced '\('"),
    ("R1 a 0 1)\n", 2, r"unbalanced '\)'"),
    ("R1 a b=c 0 1\n", 2, "bad node name|unexpected"),
    ("R1 a{ 0 1\n", 2, r"bad node name|unterminated"),
    # parameters
    ("R1 a 0 {x}\n", 2, "undefined parameter 'x'"),
    (".param a={b} b=1\nR1 a 0 1\n", 2, "undefined parameter 'b'"),
    (".param a=1\n.param a=2\nR1 a 0 1\n", 3, "duplicate parameter 'a'"),
    (".param\nR1 a 0 1\n", 2, "name=value"),
    (".param a\nR1 a 0 1\n", 2, "name=value"),
    (".param a=\nR1 a 0 1\n", 2, "missing value for 'a'"),
    (".param 1a=2\nR1 a 0 1\n", 2, "bad parameter name '1a'"),
    (".param a=v(x)\nR1 x 0 1\n", 2, "only allowed in B sources"),
    ("R1 a 0 {time}\n", 2, "only allowed in B sources"),
    ("R1 a 0 1 r=2 r=3\n", 2, "duplicate parameter"),
    # R C L E G
    ("R1 a 0\n", 2, "r1: missing value"),
    ("C1 a\n", 2, "c1: expected 2 nodes and a value"),
    ("R1 a 0 1 2\n", 2, "unexpected '2'"),
    ("R1 a 0 1 ic=0\n", 2, "unknown parameter 'ic' for r1"),
    ("C1 a 0 1p nt=2\n", 2, "unknown parameter 'nt' for c1"),
    ("C1 a 0 1p ic=0 3\n", 2, "after parameters"),
    ("E1 a 0 b\n", 2, "e1: expected 4 nodes"),
    ("G1 a 0 b 0\n", 2, "g1: missing value"),
    # sources
    ("V1 a\n", 2, "v1: expected 2 nodes"),
    ("V1 a 0\n", 2, "v1: missing value"),
    ("V1 a 0 DC\n", 2, "missing or repeated DC"),
    ("V1 a 0 1 2\n", 2, "unexpected '2'"),
    ("V1 a 0 AC\n", 2, "AC needs a magnitude"),
    ("V1 a 0 PULSE(0)\n", 2, r"PULSE needs 2 to 7 values, got 1"),
    ("V1 a 0 PULSE(0 1 2 3 4 5 6 7)\n", 2, r"PULSE needs 2 to 7 values, got 8"),
    ("V1 a 0 SIN(0 1 2 3 4 5 6)\n", 2, "SIN needs 2 to 6"),
    ("V1 a 0 PWL(0 1 2)\n", 2, "PWL needs an even number"),
    ("V1 a 0 PWL()\n", 2, "PWL needs an even number"),
    ("V1 a 0 PWL(0 0 2n 1 1n 0)\n", 2, "PWL times must be non-decreasing"),
    ("V1 a 0 pulse(0 1) sin(0 1)\n", 2, "unexpected 'sin"),
    ("V1 a 0 PULSE(0 1 x=2)\n", 2, "missing value|bad expression"),
    ("V1 a 0 {k}\n", 2, "undefined parameter 'k'"),
    # B sources
    ("B1 a 0 x=1\n", 2, "I=expr"),
    ("B1 a 0 V=\n", 2, "I=expr"),
    ("B1 a 0 V=v(zz)\nR1 a 0 1\n", 2, "b1: unknown node 'zz' in v()"),
    ("B1 a 0 V=v(a)+q\n", 2, "undefined parameter 'q'"),
    ("B1 a 0 V=1 = 2\n", 2, "unexpected '='"),
    # models
    ("R1 a 0 1\n.model m1 bjt is=1\n", 3, "unknown model type 'bjt'"),
    ("R1 a 0 1\n.model m1 nmos level=1 foo=1\n", 3, "unknown parameter 'foo' for model type 'nmos'"),
    ("R1 a 0 1\n.model m1 nmos level=4\n", 3, r"^deck.sp:3: MOSFET level 4 \(m1\) is not supported; supported: 1, 2, 3, 6$"),
    ("R1 a 0 1\n.model m1 nmos level={q}\n.param q=1\n", 3, r"MOSFET level \{q\} \(m1\) is not supported"),
    ("R1 a 0 1\n.model m1 nmos vto={zz}\n", 3, "undefined parameter 'zz'"),
    ("R1 a 0 1\n.model m1\n", 3, "needs a name and a type"),
    ("R1 a 0 1\n.model m1 d is=1\n.model m1 d is=2\n", 4, "duplicate model 'm1'"),
    ("R1 a 0 1\n.model m1 d(is=1) n=2\n", 3, "unexpected"),
    ("R1 a 0 1\n.model m1 d 5\n", 3, "expected 'name type"),
    # devices using models
    ("M1 d g s nch\n.model nch nmos\n", 2, "m1: expected 4 nodes and a model name"),
    ("M1 d g s b x nch\n.model nch nmos\n", 2, "m1: expected 4 nodes"),
    ("M1 d g s b nch\n", 2, "m1: unknown model 'nch'"),
    ("M1 d g s b dm\n.model dm d\n", 2, r"model 'dm' \(type d\) is not a 'm' device model"),
    ("D1 a 0 nch\n.model nch nmos\n", 2, "not a 'd' device model"),
    ("N1 a 0 nch\n.model nch nmos\n", 2, "not a 'n' device model"),
    ("M1 d g s b nch w=1u foo=2\n.model nch nmos\n", 2, "m1: unknown instance parameter 'foo'"),
    ("D1 a 0 dm 2 area=3\n.model dm d\n", 2, "area given twice"),
    ("D1 a dm\n.model dm d\n", 2, "expected 2 nodes and a model name"),
    ("N1 a b c fe\n.model fe lk\n", 2, "n1: model type 'lk' needs 2 nodes, got 3"),
    ("N1 fe\n.model fe lk\n", 2, "expected nodes and a model name"),
    ("N1 a 0 fe tfe=1n bogus=1\n.model fe lk\n", 2, "unknown instance parameter 'bogus'"),
    # subcircuits
    ("X1 a b nosuch\n", 2, "x1: unknown subcircuit 'nosuch'"),
    ("X1\n", 2, "x1: missing subcircuit name"),
    (".subckt s a b\nR1 a b 1\n.ends\nX1 a s\n", 5, "x1: subcircuit 's' has 2 ports, got 1 nodes"),
    (".subckt s a\nX1 a s\n.ends\nX1 n s\n", 3, "recursive instantiation of subcircuit 's'"),
    (".subckt s a\nX1 a t\n.ends\n.subckt t a\nX1 a s\n.ends\nX0 n s\n", 6, "recursive instantiation"),
    (".subckt s a k=1\nR1 a 0 {k}\n.ends\nX1 n s j=2\n", 5, "unknown parameter 'j' for subcircuit 's'"),
    (".subckt s a\nR1 a 0 {k}\n.ends\nX1 n s\n", 3, "undefined parameter 'k'"),
    (".subckt s a k={zz}\nR1 a 0 {k}\n.ends\nX1 n s\n", 2, "undefined parameter 'zz'"),
    (".subckt s a k=1\nR1 a 0 {k}\n.ends\nX1 n s k={zz}\n", 5, "undefined parameter 'zz'"),
    (".subckt s a\nR1 a 0 1\n.ends\n.subckt s b\n.ends\nX1 n s\n", 5, "duplicate subcircuit 's'"),
    (".subckt s a a\n.ends\nR1 a 0 1\n", 2, "ports must be distinct"),
    (".subckt s 0\n.ends\nX1 a s\nR1 a 0 1\n", 4, "port .0. of subcircuit .s. is ground"),
    (".subckt\nR1 a 0 1\n", 2, r"\.subckt needs a name"),
    (".subckt s a\n.tran 1n 2n\n.ends\nR1 a 0 1\n", 3, r"\.tran is not allowed inside \.subckt"),
    (".subckt s a\nR1 a 0 1\n.ends\nX1 n s\nX1 m s\n", 6, "duplicate element name 'x1'"),
    (".subckt s a\n.subckt inner b\nR1 b 0 1\n.ends\n.ends\n.subckt t a\nX1 a inner\n.ends\nX1 n t\n",
     8, "unknown subcircuit 'inner'"),
    # .ic and .tran
    ("R1 a 0 1\n.ic v(zz)=1\n", 3, r"\.ic: unknown node 'zz'"),
    ("R1 a 0 1\n.ic v(a)\n", 3, r"v\(node\)=value"),
    ("R1 a 0 1\n.ic a=1\n", 3, r"expected 'v\(node\)=value'"),
    ("R1 a 0 1\n.ic v(a)={q}\n", 3, "undefined parameter 'q'"),
    ("R1 a 0 1\n.tran 1n\n", 3, "tstep tstop"),
    ("R1 a 0 1\n.tran 1n 2n 0 1p 5\n", 3, "tstep tstop"),
    ("R1 a 0 1\n.param t=1\n.tran 1n {t}\n", 4, "must be constants"),
    ("R1 a 0 1\n.tran 0 2n\n", 3, "positive"),
    ("R1 a 0 1\n.tran 1n 2n 3n\n", 3, "tstart must be less than tstop"),
    ("R1 a 0 1\n.tran 1n 2n\n.tran 1n 3n\n", 4, r"duplicate \.tran"),
    ("R1 a 0 1\n.tran 1n 2x3\n", 3, "bad expression"),
])
def test_errors(body: str, line: int, match: str) -> None:
    expect_error(body, line, match)


def test_rejected_parameters_report_reason() -> None:
    for mtype, letter in (("nmos", "m"), ("d", "d")):
        dev = device_for_model_type(mtype)
        name, reason = next(iter(dev.rejected_params.items()))
        err = expect_error(f"R1 a 0 1\n.model m1 {mtype} {name}=1\n", 3, re.escape(reason))
        assert f"'{name}'" in str(err) and "not supported" in str(err)


def test_rejected_instance_parameter_reports_reason() -> None:
    dev = device_for_model_type("nmos")
    rejected = next((k for k in dev.rejected_params if k not in dev.model_params), None)
    if rejected is None:
        pytest.skip("nmos rejects no parameter names")
    expect_error(f"M1 d g s b nch {rejected}=1\n.model nch nmos\n", 2, "not supported")


def test_error_names_file_of_string_default() -> None:
    with pytest.raises(NetlistError, match=r"^<string>:2: "):
        parse_netlist("t\nR1 a 0\n")
