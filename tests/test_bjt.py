"""BJT (Q, .model npn/pnp): netlist forms, rejected parameters, and ngspice's Gummel-Poon model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.errors import NetlistError
from circuits.measure import compare
from circuits.ngspice import ngspice_available
from tests.netlist_helpers import assert_rejected, parse_body

DATA = Path(__file__).parent / "data"
_MODEL = ".model qn npn(is=1e-15 bf=50)\n"


def _parse(body: str):
    return parse_body(body)


def test_q_node_forms_and_area() -> None:
    """3 nodes put the substrate on ground; a 4th word is the substrate unless it is a value."""
    nl = _parse(_MODEL + "Q1 c b e qn\nQ2 c b e s qn\nQ3 c b e qn 2\nQ4 c b e s qn 3 m=2\nQ5 c b e qn area={k}\n"
                ".param k=4\nR1 s 0 1\n")
    assert nl.element("q1").nodes == ["c", "b", "e", "0"] and nl.element("q1").model == "qn"
    assert nl.element("q2").nodes == ["c", "b", "e", "s"] and not nl.element("q2").params
    assert nl.element("q3").nodes == ["c", "b", "e", "0"] and nl.element("q3").params["area"].value() == 2
    q4 = nl.element("q4")
    assert q4.nodes == ["c", "b", "e", "s"] and q4.params["area"].value() == 3 and q4.params["m"].value() == 2
    assert nl.element("q5").params["area"].names == {"k"}


def test_model_aliases_and_inert_parameters() -> None:
    """ngspice's aliases map to the canonical names; temperature and noise parameters are accepted."""
    nl = _parse(".model q1 npn(level=1 va=50 pe=0.8 me=0.4 pc=0.7 mc=0.3 ccs=2p xtb=1.5 eg=1.11 xti=3 kf=0 "
                "tnom=27 ptf=0)\nQ1 c b 0 q1\nR1 c b 1\n")
    params = nl.models["q1"].params
    assert {"vaf", "vje", "mje", "vjc", "mjc", "cjs", "xtb"} <= set(params) and "va" not in params


@pytest.mark.parametrize("card,what", [
    (".model q1 npn(rbm=10)", "'rbm' is not supported"),
    (".model q1 npn(irb=1m)", "'irb' is not supported"),
    (".model q1 npn(ptf=20)", "excess phase"),
    (".model q1 npn(tnom=50)", "'tnom' is not supported"),
    (".model q1 npn(rco=10)", "quasi-saturation"),
    (".model q1 npn(level=4)", "BJT level 4 (q1) is not supported; supported: 1"),
    (".model q1 npn(bogus=1)", "unknown parameter 'bogus'"),
])
def test_unsupported_model_parameters_are_rejected(card: str, what: str) -> None:
    assert_rejected(card + "\nQ1 c b 0 q1\nR1 c b 1\n", 2, what)


@pytest.mark.parametrize("card,what", [
    ("Q1 c b e qn areab=2", "'areab' is not supported"),
    ("Q1 c b qn", "expected 3 or 4 nodes and a model name"),
])
def test_unsupported_instances_are_rejected(card: str, what: str) -> None:
    with pytest.raises(NetlistError, match=r"<string>:3: .*" + what):
        _parse(_MODEL + card + "\nR1 c b 1\nR2 e 0 1\n")


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
@pytest.mark.parametrize("name,outputs", [
    # forward, inverse and saturated NPN with area 2 (ngspice scales the BC IS by area twice:
    # NRMSE 2e-2 if not), PNP with area and m; PWL sweep of the bases
    ("bjt_dc.cir", ["v(c1)", "v(b1)", "v(e2)", "v(b2)", "v(c3)", "v(b3)"]),
    # every charge: CJE, CJC split by XCJC, CJS (vertical NPN, lateral PNP), TF with XTF/VTF/ITF, TR
    ("bjt_rtl.cir", ["v(c1)", "v(b1)", "v(b2)", "v(c2)"]),
    # small-signal amplifier, sine drive, temperature and noise parameters present (inert at 27 C)
    ("bjt_amp.cir", ["v(b)", "v(c)", "v(e)", "v(out)"]),
])
def test_bjt_matches_ngspice(name: str, outputs: list[str]) -> None:
    circuit = load_circuit(DATA / name, outputs=outputs)
    ng = run_ngspice(circuit)
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()), rtol=1e-6)
    nrmse = compare(ng, ref)
    assert nrmse["worst"] <= 1e-3, nrmse
