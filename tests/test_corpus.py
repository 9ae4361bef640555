"""Compatibility corpus (tests/data/corpus): each real deck matches ngspice or is rejected in one line.

Every deck is run as written through NeuroSPICE and through ngspice (scripts/compat_corpus.py): it must
either match (worst node-voltage NRMSE <= 1e-3 against ngspice) or be rejected with a one-line error
that points at the deck line and names what is not supported.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from circuits.ngspice import ngspice_available

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("compat_corpus", ROOT / "scripts" / "compat_corpus.py")
cc = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("compat_corpus", cc)
_spec.loader.exec_module(cc)

pytestmark = [pytest.mark.ngspice, pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")]

# Decks that fail today because of NeuroSPICE defects being fixed (issue 19); they are left out until
# fixed rather than asserted wrongly.  deck -> what was measured and the suspected cause.
KNOWN_DEFECTS: dict[str, str] = {
    "ng_hartley_bjt": "TIMEOUT (~550 s extrapolated from 50 ms of it; ngspice 0.8-1.3 s): tran 10u 1 is 1e5 "
                      "steps under the tstep ceiling, as in ngspice (100018 points); 5.5 ms a step = 2.4 "
                      "Newton iterations, each one BJT evaluation of ~175 torch ops on (1, 1) tensors "
                      "(0.8-1.3 ms) plus junction limiting (0.5 ms). Steps by the LTE alone are only 2.2x "
                      "fewer; torch.compile of the BJT: 38 s to compile, 0.3 ms a call. Needs a per-design "
                      "device path without torch's per-op cost (single-design speed, issue 19 item 5)",
    "ng_am_sffm_sources": "TIMEOUT (AM/SFFM are ngspice-39's, tests/test_am_sffm_sources.py): tran 500n 64m "
                          "with a 450 kHz FM source on a node without charge; the step control checks every "
                          "node voltage (ngspice: charges only), ~86k steps per 2 ms, about an hour for the "
                          "deck. Even finished, v(2)/v(3) sit at 1e-23 V rounding noise in both simulators "
                          "(the deck's AM has TD=100k > tstop), which the NRMSE divides by",
    "ng_switch_ring_osc": "MISMATCH 0.66, ngspice's own switching-time error: NeuroSPICE's period is 4.4916 ns "
                          "(7.79 ns until the step after a switching point was checked), the exact piecewise-"
                          "exponential ring's 4.4938 ns, ngspice's 4.357 ns (defaults) and 4.390 ns (TIGHT_OPTIONS: "
                          "its swtrunc.c lets a control pass its threshold by up to 0.05 V before the time point "
                          "that switches, whatever the tolerances), 4.4919 ns with tmax 0.2p (NeuroSPICE 1.6e-3 "
                          "from that run, both ~1.9e-2 from the exact waveforms over 80 ns); see "
                          "tests/test_switches.py::test_switch_ring_matches_ngspice_at_a_fine_step",
}

# Decks over 1e-3 from ngspice's defaults only because ngspice's defaults are themselves more than
# 1e-3 from ngspice's converged answer (TIGHT_OPTIONS), which NeuroSPICE matches: status
# "ref-limited", accepted for these decks only and re-checked every run.  deck -> measured numbers.
REFERENCE_LIMITED: dict[str, str] = {
    "ng_rca3040": "v(13): 4.65e-2 vs ngspice defaults; 8.5e-4 vs tight ngspice, whose defaults are 4.65e-2 "
                  "from it",
    "rustsim_rlc_series": "v(2): 1.67e-3 vs ngspice defaults; 3.7e-5 vs tight ngspice, whose "
                          "defaults are 1.69e-3 from it",
    "cy_opamp_macromodel": "v(xor.3) (100k-gain node): 1.44e-3 vs ngspice defaults; 3.4e-4 vs tight "
                           "ngspice, whose defaults are 1.41e-3 from it",
    "las_astable_bc548": "v(c1) (5 Hz astable): 1.64e-2 vs ngspice defaults; 9.0e-4 vs tight ngspice, whose "
                         "defaults are 1.64e-2 from it",
    "ng_fourbit_adder_bjt": "v(9) (180 BJTs, DC point by pnjlim-limited Newton): 1.78e-2 vs ngspice defaults; "
                            "8.7e-5 vs tight ngspice, whose defaults are 1.79e-2 from it",
    "ng_rtl_inverters": "v(4): 1.5e-3 to 1.8e-3 vs ngspice defaults; 3.9e-4 to 4.0e-4 vs tight ngspice, whose defaults are "
                        "1.78e-3 from it",
    "ng_mos_amp_level2": "v(6) (level-2 amplifier): 8.03e-3 vs ngspice defaults; 5.2e-4 vs tight ngspice, whose "
                         "defaults are 8.0e-3 from it",
    "ng_ecl_schmitt": "v(3) (ECL Schmitt trigger, q1 off): 6.68e-2 vs ngspice defaults; 2.6e-5 vs tight ngspice, "
                      "whose defaults are 6.68e-2 from it",
}

# Decks whose check takes more than ~5 s (NeuroSPICE + ngspice seconds, scripts/compat_corpus.py on
# the shared 2-core machine, one torch thread, at 5aba10d): run with -m slow.
SLOW: dict[str, float] = {
    "sia_highpass_gnd": 143.4,  # TRAN 1p 80n: ~80k steps under the tstep ceiling
    "las_rlc_ringing": 20.6,
    "rustsim_rlc_series": 17.0,  # plus the TIGHT_OPTIONS re-check (ref-limited)
    "sia_rc_measure": 7.3,
    "sia_rc_step_global": 7.3,
    "las_astable_bc548": 163.3,  # tran 1ms 1s, plus the TIGHT_OPTIONS re-check (ref-limited)
    "ng_rtl_inverters": 11.5,  # plus the TIGHT_OPTIONS re-check (ref-limited)
    "sia_diode_halfwave": 11.5,
    "las_bandpass_notch": 22.1,  # tran 1m 100m with 24 node voltages
    "ng_rca3040": 22.0,  # plus the TIGHT_OPTIONS re-check (ref-limited)
    "ng_ddt_rc": 36.6,  # tran 100n 3m: 30k steps, the B source evaluated in torch per Newton iteration
    "ng_fourbit_adder_bjt": 110.0,  # 180 BJTs, plus the TIGHT_OPTIONS re-check (ref-limited)
    "ng_mos_amp_level2": 52.3,  # level-2 MOSFETs, plus the TIGHT_OPTIONS re-check (ref-limited)
    "las_adder_4bit_bsource": 8.0,  # 25 B sources (ternary logic gates), at c4a1336 + the operators
    "las_bcd_counter_bsource": 13.1,  # B-source logic on 17 nodes, at c4a1336 + the operators
    "las_lc_tank_switch": 31.4,  # tran 100n 150m: 1.5M steps under the tstep ceiling (ngspice 15.7 s)
    "ng_probe_cmos_inv": 15.1,
    "ng_vdmos_inv": 9.1,  # steep edges on an output without capacitance  # no charge at any node: ~1400 steps resolve v(out) along vin's edges
}

TIMEOUT_S = 300.0


def _decks() -> list:
    """One pytest param per corpus deck, known defects left out, slow decks marked."""
    params = []
    for deck in cc.corpus_decks():
        if deck.stem in KNOWN_DEFECTS:
            continue
        marks = [pytest.mark.slow] if deck.stem in SLOW else []
        params.append(pytest.param(deck, id=deck.stem, marks=marks))
    return params


def _logical_line(deck: Path, number: int) -> str:
    """Deck line `number` (1-based) with its '+' continuation lines joined."""
    data = deck.read_bytes()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        lines = data.decode("latin-1").splitlines()
    text = lines[number - 1]
    for cont in lines[number:]:
        if not cont.lstrip().startswith("+"):
            break
        text += " " + cont.lstrip()[1:]
    return text


_TOKEN = re.compile(r"[^\s'\"(),:=]+")


def _names_deck_item(deck: Path, message: str) -> bool:
    """True if the message is ``<deck>:<line>: ...`` and quotes a token of that (logical) deck line."""
    m = re.match(rf"{re.escape(str(deck))}:(\d+): (.*)$", message)
    if not m:
        return False
    line_tokens = {t.lower() for t in _TOKEN.findall(_logical_line(deck, int(m.group(1))))}
    said = {t.lower().strip(".;") for t in _TOKEN.findall(m.group(2))}
    return any(len(t) >= 2 and (t in line_tokens or f".{t}" in line_tokens) for t in said)


def test_corpus_has_sources() -> None:
    """At least 30 decks, each with its source on the second line (the first stays the title)."""
    decks = cc.corpus_decks()
    assert len(decks) >= 30
    missing = [d.name for d in decks if not cc.deck_source(d).startswith("https://")]
    assert not missing, f"decks without a '* source: https://...' second line: {missing}"


def test_names_deck_item_can_fail(tmp_path: Path) -> None:
    """The rejection-message check refuses a message without location or without a deck token."""
    deck = tmp_path / "d.cir"
    deck.write_text("title\nQ1 c b e qmod\n.tran 1n 10n\n.end\n")
    assert _names_deck_item(deck, f"{deck}:2: unknown element type 'q' (q1)")
    assert not _names_deck_item(deck, f"{deck}:2: something is not supported")
    assert not _names_deck_item(deck, "unknown element type 'q' (q1)")


@pytest.mark.parametrize("deck", _decks())
def test_deck_matches_ngspice_or_is_rejected(deck: Path) -> None:
    """match (worst NRMSE <= 1e-3 vs ngspice on the deck as written) or a one-line, located rejection."""
    result = cc.run_deck(deck, timeout=TIMEOUT_S, ngspice_on_reject=False,
                         check_reference=deck.stem in REFERENCE_LIMITED)
    if deck.stem in REFERENCE_LIMITED and result.status == "ref-limited":
        assert result.tight_nrmse <= cc.MATCH_TOL < result.ngspice_self
        return
    assert result.status in ("match", "rejected"), (
        f"{deck.stem}: {result.status} (worst NRMSE {result.nrmse:.3g} {result.worst_output}) {result.reason}")
    if result.status == "match":
        assert result.nrmse <= cc.MATCH_TOL
    else:
        assert result.reason and "\n" not in result.reason
        assert _names_deck_item(deck, result.reason), f"rejection does not name the deck item: {result.reason}"
