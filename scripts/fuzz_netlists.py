"""Fuzz real decks (tests/deck_fuzz.py) through load_circuit and a short simulate; print the outcome table.

    OMP_NUM_THREADS=1 python scripts/fuzz_netlists.py --count 1000 [--doc docs/bad_input.md]

Exit status 1 when any mutant crashed or raised a user error that is not one line naming the deck."""

from __future__ import annotations

import argparse
import datetime
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deck_fuzz import FAILURES, Mutant, Outcome, mutants, run_mutant, seed_decks  # noqa: E402

#: the docs section this script owns (scripts/bad_input_table.py keeps it when it rewrites the table)
HEADING = "## Fuzzed netlists"


def fuzz(count: int, seed: int, max_steps: int, seconds: float, quick: bool) -> list[tuple[Mutant, Outcome]]:
    """Run ``count`` mutants of the seed decks; (mutant, outcome) for each."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz_netlists_"))
    results: list[tuple[Mutant, Outcome]] = []

    @hypothesis_seed(seed)
    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(mutants(seed_decks(quick)))
    def one(mutant: Mutant) -> None:
        results.append((mutant, run_mutant(mutant, folder, max_steps, seconds)))

    one()
    return results


def table(results: list[tuple[Mutant, Outcome]], wall: float) -> str:
    """Markdown table: outcome, count, share, mean and max seconds; then the failures, if any."""
    kinds = Counter(o.kind for _, o in results)
    rows = ["| outcome | count | share | mean s | max s |", "|---|---:|---:|---:|---:|"]
    for kind, n in kinds.most_common():
        times = [o.seconds for _, o in results if o.kind == kind]
        rows.append(f"| {kind} | {n} | {100 * n / len(results):.1f} % | {sum(times) / n:.3f} | {max(times):.2f} |")
    rows.append(f"| total | {len(results)} | | | wall {wall:.0f} s |")
    bad = [(m, o) for m, o in results if o.kind in FAILURES]
    rows += [f"\n{o.kind}: {m.seed} {m.edits!r}: {o.message}" for m, o in bad[:20]]
    return "\n".join(rows)


def write_section(doc: Path, text: str) -> None:
    """Replace (or append) the HEADING section at the end of ``doc``."""
    old = doc.read_text() if doc.exists() else ""
    keep = old[:old.index(HEADING)] if HEADING in old else old
    doc.write_text(keep.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")


def main() -> None:
    """Parse arguments, fuzz, print the table (and write it into --doc)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="mutants to run")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (same seed, same mutants)")
    parser.add_argument("--max-steps", type=int, default=200, help="step budget of each simulation")
    parser.add_argument("--seconds", type=float, default=5.0, help="wall-clock limit of each mutant")
    parser.add_argument("--quick", action="store_true", help="only the default test's quick seed decks")
    parser.add_argument("--doc", type=Path, help=f"write the table as the '{HEADING}' section of this file")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # parser notes about ignored cards, one per mutant
    start = time.perf_counter()
    results = fuzz(args.count, args.seed, args.max_steps, args.seconds, args.quick)
    text = table(results, time.perf_counter() - start)
    print(text)
    if args.doc:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        command = " ".join(["python scripts/fuzz_netlists.py", *sys.argv[1:]])
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        write_section(args.doc, f"{HEADING}\n\nMutated corpus, training and circuit-config decks (tests/deck_fuzz.py: "
                                f"deleted, duplicated, swapped or replaced tokens and lines, SI numbers from zero to "
                                f"1e999, unknown cards, bad nodes, unbalanced brackets, truncated lines, non-UTF-8 "
                                f"bytes), each through `load_circuit` and `simulate` with a {args.max_steps}-step "
                                f"budget and a {args.seconds:g} s limit. Run {datetime.date.today()} at commit "
                                f"{commit}: `OMP_NUM_THREADS=1 {command}`. `step budget`: it loaded and ran "
                                f"that far; `time limit`: still running (mostly a large deck's operating point); "
                                f"`crash` (any other exception) or `bad message` (not one line naming the deck) "
                                f"would be bugs.\n\n{text}\n")
    sys.exit(1 if any(o.kind in FAILURES for _, o in results) else 0)


if __name__ == "__main__":
    main()
