"""U element (uniform distributed RC line, .model URC): ngspice-39's lumped expansion (urcsetup.c).

The expansion names its nodes as ngspice does (``u1#hi1``, ``u.x1.u1#lo2`` ...), so ngspice's raw file
has exactly the same node voltages as NeuroSPICE when the lump counts agree, and every lump node is
compared too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.devices.urc import urc_lumps
from circuits.errors import ConfigError
from circuits.measure import compare
from circuits.ngspice import ngspice_available
from tests.netlist_helpers import assert_rejected, parse_body
from tests.test_corpus import cc  # scripts/compat_corpus.py: ngspice runs a deck as written

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DECK = ROOT / "tests" / "data" / "corpus" / "ng_urc_line.cir"

requires_ngspice = pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")

# K 1.2 and FMAX 50G: 11 lumps by ngspice's rule, inside a subcircuit, into a resistive load
K_AND_FMAX = """URC, K 1.2, FMAX 50G
.subckt line a b ref
U1 a b ref m1 L=10m
.model m1 URC K=1.2 FMAX=50G RPERL=50k CPERL=200p
.ends
X1 in out 0 line
RL out 0 2k
VS in 0 PULSE(0 1 1n 0.3n 0.3n 6n 20n)
.tran 0.05n 25n
.end
"""
# N given (5 lumps, K 2.5), a length from a .param, a line over a reference node that is not ground
GIVEN_N = """URC, N=5, K 2.5
.param len=1m
U7 in out ref m2 L={len} N=5
.model m2 URC(K=2.5 RPERL=1meg CPERL=1n)
RR ref 0 200
CL out ref 0.5p
VS in 0 PULSE(0 2 0.5n 1n 1n 3n 10n)
.tran 0.02n 12n
.end
"""
# ISPERL and RSPERL: the shunt capacitances are junction diodes (forward biased by the pulse)
DIODES = """URC with diodes
U1 1 2 0 dm L=50u N=6
.model dm URC K=1.8 RPERL=1e7 CPERL=1e-9 ISPERL=1e-9 RSPERL=1e3
U2 1 3 0 dm2 L=50u
.model dm2 URC K=1.8 RPERL=1e7 CPERL=1e-9 ISPERL=1e-9
R2 2 0 100k
VS 1 0 PULSE(0 1 1n 0.2n 0.2n 10n 40n)
.tran 0.1n 40n
.end
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "urc.cir"
    path.write_text(text)
    return path


def _against_ngspice(path: Path, options: str | None = None) -> tuple[dict, set[str], set[str]]:
    """(NRMSE per node voltage, NeuroSPICE's node voltages, ngspice's) of the deck run as written."""
    ng = cc.run_ngspice_deck(path, options=options)
    circuit = load_circuit(path)
    t = ng["time"].to_numpy()
    ours = simulate(circuit, t=torch.tensor(np.clip(t, 0.0, circuit.tstop)))
    ours["time"] = t
    mine = {c for c in ours.columns if c.startswith("v(")}
    theirs = {c for c in ng.columns if c.startswith("v(")}
    return compare(ng, ours, columns=sorted(mine & theirs)), mine, theirs


@pytest.mark.parametrize("deck", ["corpus", "k_and_fmax", "given_n"])
@pytest.mark.ngspice
@requires_ngspice
def test_urc_line_matches_ngspice_at_every_lump_node(deck: str, tmp_path: Path) -> None:
    """The corpus deck (8 lumps), K 1.2 with FMAX 50G (11 lumps) and a given N=5 over a non-ground
    reference: the same node voltages as ngspice's, lump nodes included, within NRMSE 1e-3."""
    path = CORPUS_DECK if deck == "corpus" else _write(tmp_path, {"k_and_fmax": K_AND_FMAX,
                                                                  "given_n": GIVEN_N}[deck])
    errors, mine, theirs = _against_ngspice(path)
    assert mine == theirs
    lumps = {"corpus": 8, "k_and_fmax": 11, "given_n": 5}[deck]
    assert sum("#hi" in c for c in mine) == lumps
    assert errors["worst"] <= 1e-3, errors


@pytest.mark.ngspice
@requires_ngspice
def test_urc_line_with_isperl_is_a_chain_of_diodes_as_in_ngspice(tmp_path: Path) -> None:
    """ISPERL (with and without RSPERL): diodes of area K^(i-1) carry the capacitance.  Compared with
    ngspice near its converged answer: its defaults are 1.2e-3 from that on this deck (we: 6.8e-4)."""
    errors, mine, theirs = _against_ngspice(_write(tmp_path, DIODES), options=cc.TIGHT_OPTIONS)
    assert mine == theirs
    assert errors["worst"] <= 1e-3, errors


# (K, FMAX, RPERL, CPERL, L): below wnorm 35 (3 lumps), near it, and up to 40 lumps
SWEEP = [(1.5, 1e9, 1e3, 1e-12, 1.0), (1.5, 5.6e9, 1e3, 1e-12, 1.0), (1.5, 8e9, 1e3, 1e-12, 1.0),
         (1.1, 2e10, 1e4, 1e-12, 1.0), (1.3, 1e11, 1e5, 1e-11, 0.02), (2.0, 1e12, 1e5, 1e-11, 0.1),
         (3.0, 1e13, 1e6, 1e-10, 0.01), (1.05, 1e11, 1e4, 1e-12, 1.0)]


@pytest.mark.ngspice
@requires_ngspice
def test_lump_counts_equal_ngspices_over_a_sweep_of_k_and_fmax(tmp_path: Path) -> None:
    """ngspice's raw file lists each line's lump nodes: their count is NeuroSPICE's lump count."""
    lines = []
    for j, (k, fmax, rperl, cperl, length) in enumerate(SWEEP):
        lines += [f"U{j} in o{j} 0 m{j} L={length!r}", f".model m{j} URC K={k!r} FMAX={fmax!r} "
                  f"RPERL={rperl!r} CPERL={cperl!r}", f"R{j} o{j} 0 1meg"]
    deck = "\n".join(["URC lump counts", *lines, "VS in 0 PULSE(0 1 0 1n 1n 5n 20n)", ".tran 1n 2n", ".end"])
    ng = cc.run_ngspice_deck(_write(tmp_path, deck + "\n"))
    circuit = load_circuit(tmp_path / "urc.cir")
    for j, (k, fmax, rperl, cperl, length) in enumerate(SWEEP):
        ours = sum(n.startswith(f"u{j}#hi") for n in circuit.netlist.nodes())
        assert ours == sum(c.startswith(f"v(u{j}#hi") for c in ng.columns), (j, ours)
        assert ours == urc_lumps(k, fmax, length * rperl, length * cperl)
    assert sorted({sum(n.startswith(f"u{j}#hi") for n in circuit.netlist.nodes())
                   for j in range(len(SWEEP))})[:2] == [3, 4]


@pytest.mark.ngspice
@requires_ngspice
def test_deck_writer_writes_the_expansion_that_ngspice_runs_alike() -> None:
    """The bridge's deck (the lumped R and C elements) gives ngspice's answer to the U card."""
    circuit = load_circuit(CORPUS_DECK)
    ng = run_ngspice(circuit)
    ours = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    assert compare(ng, ours)["worst"] <= 1e-3


def test_expansion_sections_grow_by_k_and_hold_the_line_totals() -> None:
    """Sections grow by K; the resistors add up to L RPERL along each side ladder (both ladders
    in series: r0), the capacitors to L CPERL."""
    nl = parse_body(".model m URC K=2 RPERL=1k CPERL=1p\nU1 a b 0 m L=2 N=4\nV1 a 0 1\nR1 b 0 1k\n")
    rs = [el.value.value() for el in nl.elements if el.kind == "r" and el.name.startswith("u1#rlo")]
    cs = [el.value.value() for el in nl.elements if el.kind == "c"]
    assert [r / rs[0] for r in rs] == [1, 2, 4, 8]
    assert 2 * sum(rs) == pytest.approx(2000.0, rel=1e-12)
    assert sum(cs) == pytest.approx(2e-12, rel=1e-12)
    assert sorted(n for n in nl.nodes() if "#" in n) == [*(f"u1#hi{i}" for i in range(1, 5)),
                                                         *(f"u1#lo{i}" for i in range(1, 4))]


def test_generated_names_never_take_a_user_node_or_element_name() -> None:
    """A user node ``u1#hi1`` and a user line ``u1#rlo1`` push the generated names to ``...#``."""
    nl = parse_body(".model m URC\nU1 a b 0 m L=1 N=3\nV1 a 0 1\nR1 u1#hi1 0 1k\nU1#rlo1 b 0 0 m L=1 N=1\n")
    assert "u1#hi1#" in nl.nodes() and {"u1#rlo1#", "u1#rlo1#rlo1"} <= {el.name for el in nl.elements}
    assert nl.element("r1").nodes == ["u1#hi1", "0"]


def test_parameters_that_size_the_line_keep_their_netlist_values(tmp_path: Path) -> None:
    nl = parse_body(".param len=1m w=2 unrelated=3\n.param rp={1k*w}\n.model m URC RPERL={rp}\n"
                    "U1 a b 0 m L={len}\nV1 a 0 1\nR1 b 0 {unrelated}\n")
    assert {"len", "rp", "w"} <= nl.fixed_params and "unrelated" not in nl.fixed_params
    with pytest.raises(ConfigError, match="'len' decides a .if branch or a URC line's lumps"):
        simulate(load_circuit(_write(tmp_path, GIVEN_N)), {"len": 2e-3})


@pytest.mark.parametrize("body,line,what", [
    (".model m URC foo=1\nU1 a b 0 m L=1\n", 2, "unknown parameter 'foo' for model type 'urc'"),
    (".model m URC\nU1 a b 0 m L=1 bar=2\n", 3, "u1: unknown instance parameter 'bar'"),
    (".model m URC\nU1 a b 0 m\n", 3, "u1: a URC line needs a positive length L="),
    (".model m URC K=1\nU1 a b 0 m L=1\n", 3, "model 'm': K=1 must be above 1"),
    (".model m URC\nU1 a b 0 m L=1 N=0\n", 3, "N=0 lumps: expected 1 to 10000"),
    (".model m URC K=1.001 FMAX=1e30\nU1 a b 0 m L=1\n", 3, "(from FMAX, L, RPERL, CPERL): more than 10000"),
    (".model m URC\nU1 a b m L=1\n", 3, "u1: expected 3 nodes and a model name"),
    (".model m d\nU1 a b 0 m L=1\n", 3, "model 'm' (type d) is not a 'u' device model"),
])
def test_bad_urc_cards_are_rejected_in_one_line(body: str, line: int, what: str) -> None:
    assert_rejected(body, line, what, tail="V1 a 0 1\nR1 b 0 1k\n")
