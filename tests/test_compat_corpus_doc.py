"""docs/compat_corpus.md upkeep: a run on some decks replaces only their rows of the full table."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("compat_corpus", ROOT / "scripts" / "compat_corpus.py")
cc = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("compat_corpus", cc)
_spec.loader.exec_module(cc)


def _row(deck: str, status: str, nrmse: float = math.nan, reason: str = "") -> "cc.DeckResult":
    return cc.DeckResult(deck=deck, status=status, nrmse=nrmse, neurospice_s=1.0, ngspice_s=0.5,
                         reason=reason, source=f"https://example.org/{deck}.cir")


def test_subset_run_replaces_only_its_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full table of 3 decks, then a run on one: the other two rows, their provenance and counts stay."""
    doc = tmp_path / "corpus.md"
    monkeypatch.setattr(cc, "_provenance", lambda: "FULL-RUN")
    full = [_row("ng_rc_basic", "match", 9e-5, "2 node voltages"),
            _row("ng_res_simple", "match", 1.6e-17, "1 node voltages"),
            _row("ng_ltra_line", "rejected", reason="x.cir:7: unknown element type 'o' (o1) | a pipe")]
    cc.write_doc(full, doc)
    monkeypatch.setattr(cc, "_provenance", lambda: "SUBSET-RUN")
    cc.write_doc([_row("ng_res_simple", "TIMEOUT", reason="did not finish")], doc, partial=True)

    base, notes, rows = cc.read_doc(doc)
    assert base == "FULL-RUN"
    assert notes == [("SUBSET-RUN", ["ng_res_simple"])]
    assert [(r.deck, r.status) for r in rows] == [("ng_ltra_line", "rejected"), ("ng_rc_basic", "match"),
                                                  ("ng_res_simple", "TIMEOUT")]
    assert rows[0].reason.endswith("| a pipe") and rows[1].nrmse == pytest.approx(9e-5)
    text = doc.read_text()
    assert "**3 decks: 1 match, 1 rejected, 0 MISMATCH, 0 TRACEBACK, 1 TIMEOUT**" in text
    assert "| 1 | unknown element type 'o' \\| a pipe |" in text

    # re-measuring the same deck again moves it to the newest note; a full run clears the notes
    monkeypatch.setattr(cc, "_provenance", lambda: "LATER")
    cc.write_doc([_row("ng_res_simple", "match", 1e-17)], doc, partial=True)
    assert cc.read_doc(doc)[1] == [("LATER", ["ng_res_simple"])]
    cc.write_doc(full, doc)
    assert cc.read_doc(doc)[:2] == ("LATER", [])
