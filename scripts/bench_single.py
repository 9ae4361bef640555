"""Benchmark: one design, reference solver vs ngspice (as the bridge runs it), per deck; prints a table.

python scripts/bench_single.py [--decks PATTERN ...] [--configs rc amp ring5 feram] [--repeats 3]

Cases: the compatibility-corpus decks (tests/data/corpus/*.cir) whose status in docs/compat_corpus.md
is match or ref-limited (the decks NeuroSPICE runs; --decks picks others), plus the shipped configs.  Per case and repeat, both engines run from one loaded
circuit in the same process, one after the other:
- ngspice: `circuits.ngspice.run_ngspice(circuit)`, timed around the whole call (deck writing, the
  ngspice subprocess, reading the raw file);
- reference: `circuits.simulate(circuit, t=<ngspice's time points>)` on a freshly loaded circuit
  (MNA assembly, DC operating point, transient, interpolation), default solver settings.
Each column is the median over the repeats; ratio = reference / ngspice; nrmse = worst output
NRMSE of the reference against ngspice (as `circuits.compare`).  The last lines give the median
ratio and the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from circuits import load_circuit, measure, simulate  # noqa: E402
from circuits.errors import NeuroSpiceError  # noqa: E402
from circuits.ngspice import NgspiceError, run_ngspice  # noqa: E402
from circuits.cli import user_errors  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
CORPUS_DOC = ROOT / "docs" / "compat_corpus.md"
RUNS = ("match", "ref-limited")
CONFIGS = ["rc", "amp", "ring5", "feram"]


def running_decks() -> set[str]:
    """Decks whose status in the corpus table (docs/compat_corpus.md) is match or ref-limited."""
    names = set()
    for line in CORPUS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[1] in RUNS:
            names.add(cells[0])
    return names


def cases(patterns: list[str] | None, configs: list[str]) -> list[tuple[str, str]]:
    """(label, load_circuit argument) of the decks matching patterns (default: the running decks)
    and of the configs."""
    decks = sorted(CORPUS.glob("*.cir"))
    if patterns:
        decks = [d for d in decks if any(fnmatch.fnmatch(d.stem, p) for p in patterns)]
    else:
        running = running_decks()
        decks = [d for d in decks if d.stem in running]
    return [(d.stem, str(d)) for d in decks] + [(c, c) for c in configs]


def measure_case(label: str, source: str, repeats: int) -> dict | str:
    """One row of the table, or why the case was skipped (NeuroSPICE rejects the deck, or ngspice
    or the reference fails on it)."""
    try:
        circuit = load_circuit(source)
    except NeuroSpiceError as exc:
        return f"rejected: {str(exc).splitlines()[0]}"
    ng_walls, ref_walls = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            ng = run_ngspice(circuit)
        except (NgspiceError, NeuroSpiceError) as exc:
            return f"ngspice (bridge) failed: {str(exc).splitlines()[0]}"
        ng_walls.append(time.perf_counter() - t0)
        fresh = load_circuit(source)  # nothing cached: assembly is part of the reference's time
        grid = torch.tensor(ng["time"].to_numpy(), dtype=torch.float64).clamp(0.0, fresh.tstop)
        t0 = time.perf_counter()
        try:
            ref = simulate(fresh, t=grid)
        except NeuroSpiceError as exc:
            return f"reference failed: {str(exc).splitlines()[0]}"
        ref_walls.append(time.perf_counter() - t0)
    columns = [c for c in circuit.outputs if c in ng.columns]
    ref["time"] = ng["time"].to_numpy()
    worst = measure.compare(ng, ref, columns=columns)["worst"]
    ng_s, ref_s = statistics.median(ng_walls), statistics.median(ref_walls)
    return {"case": label, "steps": ref.attrs["stats"]["steps"], "reference_s": ref_s, "ngspice_s": ng_s,
            "ratio": ref_s / ng_s, "nrmse": worst}


@user_errors
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decks", nargs="*", default=None,
                    help="corpus deck name patterns (default: match/ref-limited in docs/compat_corpus.md)")
    ap.add_argument("--configs", nargs="*", default=CONFIGS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows, skipped = [], []
    for label, source in cases(args.decks, args.configs):
        row = measure_case(label, source, args.repeats)
        if isinstance(row, str):
            skipped.append(f"{label}: {row}")
            continue
        rows.append(row)
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1,
                                                 float_format=lambda x: f"{x:.3g}"), flush=True)
    if not rows:
        print("no case ran")
        return 1
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    load_after = os.getloadavg()
    print(f"\n{len(rows)} cases; median ratio reference/ngspice {table.ratio.median():.2f} "
          f"(within 3x: {int((table.ratio <= 3).sum())}/{len(rows)}); median of {args.repeats} repeats; "
          f"{args.threads} torch thread(s); load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after on {os.cpu_count()} CPUs")
    for line in skipped:
        print(f"skipped {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
