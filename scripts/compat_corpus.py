"""Compatibility corpus: every deck in tests/data/corpus through NeuroSPICE and through ngspice as written.

python scripts/compat_corpus.py [--decks PATTERN ...] [--timeout S] [--no-doc]

Each deck (real SPICE decks written by others; the source is the deck's second line) is loaded with
`circuits.load_circuit` and simulated with `circuits.simulate` (default solver settings), and run by
ngspice itself from the original text: only its `.control` blocks and `.end` are replaced by a control
block of ours that runs the deck's transient and writes a raw file (the `tran` of a `.control` block
becomes a `.tran` card when the deck has none).  NeuroSPICE is evaluated at ngspice's own time points
(NeuroSPICE interpolates; ngspice values are used as computed), and the NRMSE of every node voltage
NeuroSPICE reports is the time-weighted RMS error over the window divided by ngspice's peak-to-peak
(`circuits.measure.nrmse`).  Status per deck:

- ``match``     worst NRMSE <= 1e-3;
- ``rejected``  NeuroSPICE raised a one-line NetlistError/ConfigError (the reason is recorded);
- ``MISMATCH``  NeuroSPICE ran but the worst NRMSE > 1e-3 (a silent wrong answer: a defect);
- ``ref-limited`` a MISMATCH explained by ngspice itself: against ngspice run with TIGHT_OPTIONS,
                NeuroSPICE is within 1e-3 while ngspice's defaults are more than 1e-3 away (the
                reason column gives both numbers; not counted as a defect);
- ``TRACEBACK`` any other exception (a defect);
- ``ERROR``     another NeuroSpiceError (e.g. ConvergenceError) or a multi-line message (a defect);
- ``TIMEOUT``   NeuroSPICE did not finish within --timeout seconds;
- ``NGSPICE``   ngspice itself failed on the deck (a corpus problem, not a NeuroSPICE verdict).

Prints a table and a summary and writes docs/compat_corpus.md (atomically) unless --no-doc; with
--decks only those rows of the existing table are replaced (the header says when each was measured).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import math
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from circuits.errors import ConfigError, NetlistError, NeuroSpiceError  # noqa: E402
from circuits.io import atomic_path  # noqa: E402
from circuits.ngspice import ngspice_executable, ngspice_version, read_raw  # noqa: E402

CORPUS_DIR = ROOT / "tests" / "data" / "corpus"
DOC_PATH = ROOT / "docs" / "compat_corpus.md"
MATCH_TOL = 1e-3
DEFECTS = ("MISMATCH", "TRACEBACK", "ERROR", "TIMEOUT")
STATUSES = ("match", "rejected", "ref-limited", *DEFECTS, "NGSPICE")
# ngspice near its converged answer, for the second opinion on a MISMATCH
TIGHT_OPTIONS = ".options reltol=1e-7 abstol=1e-15 vntol=1e-10"
RAW_NAME = "corpus.raw"

__all__ = ["DeckResult", "corpus_decks", "deck_source", "ngspice_text", "run_ngspice_deck",
           "run_deck", "read_doc", "merge_results", "write_doc", "main"]


@dataclass
class DeckResult:
    """The verdict on one deck."""

    deck: str
    status: str
    nrmse: float = math.nan
    worst_output: str = ""
    neurospice_s: float = math.nan
    ngspice_s: float = math.nan
    reason: str = ""
    source: str = ""
    tight_nrmse: float = math.nan  # NeuroSPICE vs ngspice with TIGHT_OPTIONS (MISMATCH decks only)
    ngspice_self: float = math.nan  # ngspice's defaults vs ngspice with TIGHT_OPTIONS (likewise)


class DeckTimeout(Exception):
    """NeuroSPICE ran past the per-deck time limit."""


# --------------------------------------------------------------------------------------------------
# the corpus

def corpus_decks(patterns: Sequence[str] | None = None, corpus: Path = CORPUS_DIR) -> list[Path]:
    """The corpus decks (*.cir, sorted), optionally only those whose stem matches a glob pattern."""
    decks = sorted(corpus.glob("*.cir"))
    if patterns:
        decks = [d for d in decks if any(fnmatch.fnmatch(d.stem, p) or fnmatch.fnmatch(d.name, p)
                                         for p in patterns)]
    return decks


def deck_source(path: Path) -> str:
    """The ``* source: ...`` comment on the deck's second line ('' if absent)."""
    lines = path.read_bytes().decode("latin-1").splitlines()
    if len(lines) > 1 and lines[1].lower().startswith("* source:"):
        return lines[1].split(":", 1)[1].strip()
    return ""


# --------------------------------------------------------------------------------------------------
# ngspice on the deck as written

_CONTROL_START = re.compile(r"^\s*\.control\b", re.IGNORECASE)
_CONTROL_END = re.compile(r"^\s*\.endc\b", re.IGNORECASE)
_END = re.compile(r"^\s*\.end\s*$", re.IGNORECASE)
_TRAN_CARD = re.compile(r"^\s*\.tran\b", re.IGNORECASE)
_RUN_CMD = re.compile(r"^\s*(tran|run)\b\s*(.*)$", re.IGNORECASE)
_ALTER_CMD = re.compile(r"^\s*alter\s", re.IGNORECASE)


def ngspice_text(text: str, raw_path: Path) -> str:
    """The deck with its `.control` blocks and `.end` replaced by ours: run, then write `raw_path`.

    The first `tran` command of a removed control block becomes a `.tran` card if the deck has none
    (ngspice batch semantics: the control block's transient is the deck's analysis).  The `alter`
    commands before the first `tran` or `run` are kept, in order, before our `tran` (they change
    the circuit of that analysis, as NeuroSPICE applies them: circuits.alter).
    """
    kept: list[str] = []
    alters: list[str] = []
    control_tran: str | None = None
    ran = False  # a control block has reached its first tran or run
    in_control = False
    for line in text.splitlines():
        if in_control:
            if _CONTROL_END.match(line):
                in_control = False
            elif not ran and _ALTER_CMD.match(line):
                alters.append(line.strip())
            elif m := _RUN_CMD.match(line):
                if control_tran is None and m.group(1).lower() == "tran" and m.group(2).strip():
                    control_tran = m.group(2).split(";")[0].split("$ ")[0].strip()
                ran = True
            continue
        if _CONTROL_START.match(line):
            in_control = True
            continue
        if _END.match(line):
            break
        kept.append(line)
    tran = _tran_card_args(kept[1:])
    if tran is None:
        if control_tran is None:
            raise ValueError("the deck has no transient analysis (.tran card or tran in .control)")
        tran = control_tran
    # `tran` rather than `run`: only the transient, not the deck's other analyses (.op, .ac, .pss ...)
    # remzerovec: vectors that stayed empty (e.g. from `.option savecurrents`) make `write` fail
    kept += [".control", "save all", *alters, f"tran {tran}", "remzerovec", f"write {raw_path}", ".endc", ".end"]
    return "\n".join(kept) + "\n"


def _tran_card_args(lines: Sequence[str]) -> str | None:
    """The arguments of the first `.tran` card (continuation lines joined, comments cut), or None."""
    for k, line in enumerate(lines):
        if _TRAN_CARD.match(line):
            text = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
            for cont in lines[k + 1:]:
                if not cont.lstrip().startswith("+"):
                    break
                text += " " + cont.lstrip()[1:]
            return re.split(r"\s;|\s\$\s", " " + text)[0].strip()
    return None


def _vector_name(name: str) -> str:
    """ngspice raw-file vector name -> NeuroSPICE column name (``v(x)``, ``i(v1)``)."""
    name = name.lower()
    if name.endswith("#branch"):
        return f"i({name[:-len('#branch')]})"
    if "(" in name or name == "time":
        return name
    return f"v({name})"


def run_ngspice_deck(path: Path, timeout: float = 120.0, options: str | None = None) -> pd.DataFrame:
    """Run one deck with ``ngspice -b`` as written (see `ngspice_text`); columns time, v(...), i(...).

    ngspice runs in a temporary folder (model checkers such as BSIM3's write log files into the
    working folder), so corpus decks must be self-contained (no relative `.include`).
    ``attrs["wall_s"]``: the ngspice subprocess wall time.  ``options``: an extra card after the title.
    Raises RuntimeError when ngspice fails.
    """
    exe = ngspice_executable()
    text = path.read_bytes().decode("latin-1")
    if options:  # e.g. TIGHT_OPTIONS: a second line after the title
        title, _, rest = text.partition("\n")
        text = f"{title}\n{options}\n{rest}"
    with tempfile.TemporaryDirectory(prefix="compat_corpus_") as tmp:
        raw = Path(tmp) / RAW_NAME
        deck = Path(tmp) / path.name
        deck.write_bytes(ngspice_text(text, raw).encode("latin-1"))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([exe, "-b", str(deck)], cwd=tmp, capture_output=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"ngspice did not finish within {timeout:g} s") from None
        wall = time.perf_counter() - t0
        log = (proc.stdout + proc.stderr).decode("latin-1")
        if not raw.exists():
            errs = [ln.strip() for ln in log.splitlines() if re.search(r"error", ln, re.IGNORECASE)]
            raise RuntimeError(f"ngspice wrote no raw file (exit {proc.returncode}): "
                               f"{errs[0] if errs else log.strip().splitlines()[-1:]}")
        aborted = [ln.strip() for ln in log.splitlines() if re.search(r"aborted|too small", ln, re.I)]
        if aborted:
            raise RuntimeError(f"ngspice: {aborted[0]}")
        names, data = read_raw(raw)
    frame = pd.DataFrame(data, columns=[_vector_name(n) for n in names])
    frame = frame.loc[:, ~frame.columns.duplicated()]
    if len(frame) < 2:
        raise RuntimeError("ngspice wrote fewer than two time points")
    frame.attrs["wall_s"] = wall
    return frame


# --------------------------------------------------------------------------------------------------
# NeuroSPICE on the deck, and the verdict

@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise DeckTimeout in the main thread after `seconds` (no limit where SIGALRM is unavailable)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise DeckTimeout()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line (first line only)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _neurospice_stage(result: DeckResult, step, timeout: float):
    """Run `step()` under the time limit; on failure fill in `result` and return None."""
    t0 = time.perf_counter()
    try:
        with _time_limit(timeout):
            return step()
    except DeckTimeout:
        result.status, result.reason = "TIMEOUT", f"NeuroSPICE did not finish within {timeout:g} s"
    except (NetlistError, ConfigError) as exc:
        message = str(exc).strip()
        if "\n" in message or not message:
            result.status, result.reason = "ERROR", f"not a one-line message: {message!r}"[:300]
        else:
            result.status, result.reason = "rejected", message
    except NeuroSpiceError as exc:
        result.status, result.reason = "ERROR", _one_line(exc)
    except Exception as exc:  # noqa: BLE001 - any other exception is the defect being recorded
        result.status, result.reason = "TRACEBACK", _one_line(exc)
    finally:
        spent = time.perf_counter() - t0
        result.neurospice_s = spent if math.isnan(result.neurospice_s) else result.neurospice_s + spent
    return None


def run_deck(path: Path, timeout: float = 120.0, *, ngspice_on_reject: bool = True,
             check_reference: bool = True) -> DeckResult:
    """Run one deck through both engines and classify it (see the module docstring).

    NeuroSPICE loads the deck first; when it rejects the deck, ngspice runs only if
    ``ngspice_on_reject`` (the table's ngspice column, and a check that ngspice accepts the deck).
    ``check_reference``: on a MISMATCH, compare both engines with ngspice at TIGHT_OPTIONS.
    """
    import torch

    import circuits
    from circuits import measure

    result = DeckResult(deck=path.stem, status="", source=deck_source(path))
    circuit = _neurospice_stage(result, lambda: circuits.load_circuit(path), timeout)
    rejected = circuit is None
    if rejected and not ngspice_on_reject:
        return result
    try:
        ng = run_ngspice_deck(path, timeout=timeout)
    except (RuntimeError, ValueError, OSError) as exc:
        result.status, result.reason = "NGSPICE", str(exc).splitlines()[0]
        return result
    result.ngspice_s = float(ng.attrs["wall_s"])
    if rejected:
        return result
    t_ng = ng["time"].to_numpy()
    grid = torch.tensor(np.clip(t_ng, 0.0, circuit.tstop), dtype=torch.float64)
    ours = _neurospice_stage(result, lambda: circuits.simulate(circuit, t=grid), timeout)
    if ours is None:
        return result
    ours["time"] = t_ng  # the grid was clipped to [0, tstop] only for the call
    outputs = [c for c in ours.columns if c != "time" and c.startswith("v(")]
    missing = [c for c in outputs if c not in ng.columns]
    compared = [c for c in outputs if c in ng.columns]
    if not compared:
        result.status = "TRACEBACK"
        result.reason = f"no common node voltage with ngspice (NeuroSPICE: {outputs[:5]})"
        return result
    errors = measure.compare(ng, ours, columns=compared)
    errors.pop("worst")
    worst = max(errors, key=lambda k: (math.isnan(errors[k]), errors[k]))
    result.nrmse, result.worst_output = float(errors[worst]), worst
    ok = result.nrmse <= MATCH_TOL
    result.status = "match" if ok else "MISMATCH"
    notes = [f"{len(compared)} node voltages"]
    if not ok:
        notes.append(f"worst {worst}")
    if missing:
        notes.append(f"not in ngspice's output: {', '.join(missing[:4])}")
    if not ok and check_reference:
        notes.append(_reference_check(result, path, circuit, compared, ng, timeout))
    result.reason = "; ".join(notes)
    return result


def _reference_check(result: DeckResult, path: Path, circuit, columns: list[str], default: pd.DataFrame,
                     timeout: float) -> str:
    """Second opinion on a MISMATCH: both engines against ngspice run with TIGHT_OPTIONS.

    When NeuroSPICE is within MATCH_TOL of the tight run while ngspice's defaults are more than
    MATCH_TOL away from it (on ngspice's own default points), the disagreement is ngspice's own
    default-tolerance error: status ``ref-limited``.  Returns a note for the reason column.
    """
    import torch

    import circuits
    from circuits import measure

    try:
        tight = run_ngspice_deck(path, timeout=timeout, options=TIGHT_OPTIONS)
    except (RuntimeError, ValueError, OSError) as exc:
        return f"tight ngspice failed: {str(exc).splitlines()[0]}"
    t = tight["time"].to_numpy()
    grid = torch.tensor(np.clip(t, 0.0, circuit.tstop), dtype=torch.float64)
    spent = result.neurospice_s
    ours = _neurospice_stage(result, lambda: circuits.simulate(circuit, t=grid), timeout)
    result.neurospice_s = spent  # the table keeps the time of the deck's own run
    if ours is None:
        return "NeuroSPICE failed on the tight grid"
    ours["time"] = t
    cols = [c for c in columns if c in tight.columns]
    result.tight_nrmse = measure.compare(tight, ours, columns=cols)["worst"]
    result.ngspice_self = measure.compare(default, tight, columns=cols)["worst"]
    if result.tight_nrmse <= MATCH_TOL < result.ngspice_self:
        result.status = "ref-limited"
    return (f"vs ngspice {TIGHT_OPTIONS.removeprefix('.options ')}: {result.tight_nrmse:.2e}, "
            f"ngspice defaults vs that: {result.ngspice_self:.2e}")


# --------------------------------------------------------------------------------------------------
# reporting

def _fmt_num(x: float, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(results: Sequence[DeckResult]) -> pd.DataFrame:
    """One row per deck: deck, status, worst NRMSE, NeuroSPICE s, ngspice s, reason."""
    return pd.DataFrame([{"deck": r.deck, "status": r.status, "nrmse": _fmt_num(r.nrmse, ".2e"),
                          "neurospice_s": _fmt_num(r.neurospice_s, ".2f"),
                          "ngspice_s": _fmt_num(r.ngspice_s, ".2f"), "reason": _relative(r.reason)}
                         for r in results])


def summary(results: Sequence[DeckResult]) -> str:
    """``n decks: a match, b rejected, ...`` over every status that occurs (match/rejected always)."""
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s] or s in ("match", "rejected", "MISMATCH",
                                                                        "TRACEBACK")]
    return f"{len(results)} decks: " + ", ".join(parts)


def _git_commit() -> str:
    """HEAD's short hash, with ``+local changes`` when the work tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{head}{' +local changes' if dirty else ''}" if head else "unknown"


def _md_cell(text: str) -> str:
    return _relative(str(text)).replace("|", "\\|").replace("\n", " ")


def _relative(text: str) -> str:
    """Paths under the repository written relative to it."""
    return text.replace(f"{ROOT}/", "")


def rejection_kinds(results: Sequence[DeckResult]) -> list[tuple[str, int]]:
    """Rejection messages without location and instance/model names, with their counts (most first)."""
    counts: dict[str, int] = {}
    for r in results:
        if r.status != "rejected":
            continue
        key = re.sub(r"^\S+:\d+: ", "", r.reason)
        key = re.sub(r"^\.model \S+: ", ".model: ", key)
        key = re.sub(r"^[a-z][\w.]*: (?=(expected|unexpected|parameter))", "", key)
        key = re.sub(r" \([^)]*\)", "", key)
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _provenance() -> str:
    """Where and how the numbers were measured: date, commit, ngspice and torch versions, threads."""
    import torch

    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"{when} on commit {_git_commit()}, ngspice {ngspice_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} thread(s))")


_GENERATED = "Generated by `scripts/compat_corpus.py`; measured "
_REMEASURED = "- re-measured "
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _parse_num(cell: str) -> float:
    return math.nan if cell.strip() in ("-", "") else float(cell)


def read_doc(path: Path = DOC_PATH) -> tuple[str, list[tuple[str, list[str]]], list[DeckResult]]:
    """An existing report: the full run's provenance, later re-measurements (provenance, decks), rows.

    Returns ("", [], []) when the file does not exist or holds no table.
    """
    if not path.exists():
        return "", [], []
    base, notes, rows = "", [], []
    for line in path.read_text().splitlines():
        if line.startswith(_GENERATED):
            base = line[len(_GENERATED):].rstrip(".")
        elif line.startswith(_REMEASURED):
            prov, _, decks = line[len(_REMEASURED):].rpartition(": ")
            notes.append((prov, [d.strip() for d in decks.split(",") if d.strip()]))
        elif line.startswith("| ") and not line.startswith(("| deck |", "| decks |")):
            cells = [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(line)[1:-1]]
            if len(cells) != 7:
                continue  # the rejection-reason table (2 columns)
            deck, status, nrmse, ours_s, ng_s, reason, source = cells
            rows.append(DeckResult(deck=deck, status=status, nrmse=_parse_num(nrmse),
                                   neurospice_s=_parse_num(ours_s), ngspice_s=_parse_num(ng_s),
                                   reason=reason, source=source))
    return base, notes, rows


def merge_results(old: Sequence[DeckResult], new: Sequence[DeckResult],
                  decks: Sequence[str]) -> list[DeckResult]:
    """The table after a subset run: `new` rows replace or join `old` ones; only `decks` kept, sorted."""
    by_deck = {r.deck: r for r in old}
    by_deck.update({r.deck: r for r in new})
    return [by_deck[d] for d in sorted(decks) if d in by_deck]


def write_doc(results: Sequence[DeckResult], path: Path = DOC_PATH, *, partial: bool = False) -> None:
    """Write the markdown report (table, summary, rejection reasons, date, commit) atomically.

    ``partial``: `results` re-measure some decks; their rows replace those of the existing report
    (decks no longer in the corpus dropped), and the header lists which rows were re-measured when.
    """
    prov = _provenance()
    base, notes = prov, []
    if partial:
        old_base, old_notes, old_rows = read_doc(path)
        if old_rows:
            fresh = {r.deck for r in results}
            notes = [(p, [d for d in ds if d not in fresh]) for p, ds in old_notes]
            notes = [(p, ds) for p, ds in notes if ds]
            notes.append((prov, sorted(fresh)))
            base = old_base or "(unknown)"
            results = merge_results(old_rows, results, [d.stem for d in corpus_decks()])
        else:
            base = f"{prov} (a subset of the decks)"
    lines = ["# Compatibility corpus: real SPICE decks, NeuroSPICE vs ngspice", "",
             f"{_GENERATED}{base}.", *(f"{_REMEASURED}{p}: {', '.join(ds)}" for p, ds in notes), "",
             "Decks: `tests/data/corpus/*.cir`, each copied verbatim from the source on its second "
             "line. NeuroSPICE: `circuits.load_circuit` + `circuits.simulate` (default settings), "
             "evaluated at ngspice's time points; ngspice: the deck as written, its `.control` "
             "block replaced by `tran` (the deck's) + `write`. NRMSE: time-weighted RMS error over the window / "
             "ngspice's peak-to-peak, worst over every node voltage. `match`: <= 1e-3; `rejected`: "
             "a one-line error naming what is not supported; `ref-limited`: over 1e-3 from ngspice's "
             f"defaults, but within 1e-3 of ngspice run with `{TIGHT_OPTIONS}` while ngspice's "
             "defaults are not (ngspice's own tolerance error); MISMATCH, TRACEBACK, ERROR, TIMEOUT "
             "are defects.", "", f"**{summary(results)}**", "",
             "| deck | status | worst NRMSE | NeuroSPICE s | ngspice s | reason | source |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.deck} | {r.status} | {_fmt_num(r.nrmse, '.2e')} | "
                     f"{_fmt_num(r.neurospice_s, '.2f')} | {_fmt_num(r.ngspice_s, '.2f')} | "
                     f"{_md_cell(r.reason)} | {_md_cell(r.source)} |")
    kinds = rejection_kinds(results)
    if kinds:
        lines += ["", "Rejection reasons (location and instance names removed):", "",
                  "| decks | reason |", "|---|---|"]
        lines += [f"| {n} | {_md_cell(k)} |" for k, n in kinds]
    lines.append("")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the corpus, print the table and summary, write the doc."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decks", nargs="+", default=None, metavar="PATTERN",
                    help="glob(s) on deck names, e.g. 'rc*' (default: every deck)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per deck and engine")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--no-doc", action="store_true", help=f"do not write {DOC_PATH.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    try:
        ngspice_executable()
    except NeuroSpiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    decks = corpus_decks(args.decks)
    if not decks:
        print(f"error: no deck in {CORPUS_DIR} matches {args.decks}", file=sys.stderr)
        return 2
    results = []
    pd.set_option("display.max_colwidth", 110)
    pd.set_option("display.width", 250)
    for k, path in enumerate(decks):
        results.append(run_deck(path, timeout=args.timeout))
        print(table(results[-1:]).to_string(index=False, header=k == 0), flush=True)
    print()
    print(summary(results))
    if not args.no_doc:
        write_doc(results, partial=bool(args.decks))
        print(f"wrote {DOC_PATH.relative_to(ROOT)}")
    return 1 if any(r.status in DEFECTS for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
