"""Fast inference form vs the PINN it came from: accuracy against the reference solver on held-out designs,
1000 designs x 500 times wall clock, ngspice per design; one table row per surrogate file.

python scripts/bench_fast_inference.py pretrained/rc.pt pretrained/amp.pt --designs 64 --doc docs/fast_inference.md
A file without a fast form gets one built in memory first (the file is not changed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # scripts/optimize.py would shadow the `optimize` package

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from circuits.cli import user_errors  # noqa: E402


def held_out(model, designs: int, seed: int = 0) -> torch.Tensor:
    """Nominal plus `designs` uniform random designs, as scripts/bench_surrogate.py draws them."""
    space = model.circuit.space
    P = space.nominal_vector().unsqueeze(0)
    if model.metrics.get("fixed_params") or space.dim == 0:
        return P
    return torch.cat([P, space.sample_uniform(designs, torch.Generator().manual_seed(20_000 + seed))])


def wall_ms(fn, threads: int, repeats: int) -> float:
    """Least wall time (ms) of `repeats` calls of fn on `threads` intra-op threads (no grad)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            fn()
            walls = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                walls.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return min(walls) * 1e3


def ngspice_ms(circuit, runs: int = 4) -> float:
    """ngspice's mean wall time per design (ms) over `runs` random designs, as bench_surrogate measures it."""
    from circuits.ngspice import ngspice_available, run_ngspice_batch

    if not ngspice_available():
        return float("nan")
    P = circuit.space.sample_uniform(runs, torch.Generator().manual_seed(1))
    frames = run_ngspice_batch(circuit, [circuit.space.to_dict(p) for p in P], progress=False)
    return float(np.mean([f.attrs["wall_s"] for f in frames])) * 1e3


def evaluate(path: Path, designs: int, repeats: int) -> dict:
    """One row: worst/median NRMSE vs the reference of the PINN and of its fast form, and their speed."""
    from circuits.simulation import simulate_batch
    from surrogate.api import load_surrogate
    from surrogate.distill import build_fast_form
    from surrogate.held_out import nrmse_table

    model = load_surrogate(path)
    c = model.circuit
    built = model.fast_form is None
    if built:
        model.fast_form = build_fast_form(model, log=lambda line: None)
    form = model.fast_form
    P = held_out(model, designs)
    t = torch.linspace(0, c.tstop, 1001, dtype=torch.float64)
    with torch.no_grad():
        y_pinn = model.predict_batch(t, P, exact=True)
        y_fast = model.predict_batch(t, P)
        _, y_ref = simulate_batch(c, P, t=t, rtol=1e-6)
    pinn = nrmse_table(y_pinn, y_ref).amax(dim=1)
    fast = nrmse_table(y_fast, y_ref).amax(dim=1)
    vs_pinn = nrmse_table(y_fast, y_pinn).amax(dim=1)
    P_big = c.space.sample_uniform(1000, torch.Generator().manual_seed(1))
    t_big = torch.linspace(0, c.tstop, 500, dtype=torch.float64)
    ms = {f"{name}_ms_{k}t": wall_ms(lambda: model.predict_batch(t_big, P_big, exact=exact), k,
                                      repeats if not exact else 2)
          for name, exact in (("pinn", True), ("fast", False)) for k in (2, 1)}
    ng = ngspice_ms(c)
    return {"file": str(path), "circuit": c.name, "designs": int(P.shape[0]), "windows": model.windows,
            "segments": form.segments, "degree": form.metrics.get("degree"),
            "pinn_worst": float(pinn.max()), "pinn_median": float(pinn.median()),
            "fast_worst": float(fast.max()), "fast_median": float(fast.median()),
            "fast_vs_pinn_worst": float(vs_pinn.max()), **ms, "ngspice_ms": ng,
            "x_ngspice_fast_2t": ng / (ms["fast_ms_2t"] / 1000), "x_ngspice_fast_1t": ng / (ms["fast_ms_1t"] / 1000),
            "built_s": form.metrics.get("build_s") if built else 0.0}


BEGIN, END = "<!-- bench_fast_inference: begin -->", "<!-- bench_fast_inference: end -->"


def markdown(table: pd.DataFrame, command: str) -> str:
    """The measured block: the command, commit, machine load and the table."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    cols = ["file", "circuit", "designs", "segments", "degree", "pinn_worst", "pinn_median", "fast_worst",
            "fast_median", "fast_vs_pinn_worst", "pinn_ms_2t", "fast_ms_2t", "pinn_ms_1t", "fast_ms_1t",
            "ngspice_ms", "x_ngspice_fast_2t", "x_ngspice_fast_1t"]
    fmt = {c: (lambda x: f"{x:.2e}") for c in cols if "worst" in c or "median" in c}
    fmt.update({c: (lambda x: f"{x:.1f}") for c in cols if c.endswith("_ms") or "_ms_" in c})
    fmt.update({c: (lambda x: f"{x:,.0f}") for c in cols if c.startswith("x_")})
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(fmt.get(c, str)(row[c]) for c in cols) + " |")
    return (f"{date.today().isoformat()}, commit {commit}"
            f"{' (with uncommitted changes)' if dirty else ''}, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} while measuring.\n\n```\n{command}\n```\n\n"
            + "\n".join(lines) + "\n")


@user_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--designs", type=int, default=64, help="held-out uniform designs (plus the nominal)")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls of the fast form (the least counts)")
    ap.add_argument("--doc", type=Path, help="write the table as a markdown page here")
    args = ap.parse_args()
    torch.set_num_threads(1)  # everything but the timed inference runs on one thread
    rows = []
    for f in args.files:
        rows.append(evaluate(f, args.designs, args.repeats))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda x: f"{x:.3g}"), flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.drop(columns=["file"]).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    if args.doc:
        from circuits.io import atomic_path

        command = "OMP_NUM_THREADS=1 .venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
        # the block between the markers is replaced; the page's own text stays
        page = args.doc.read_text() if args.doc.is_file() else f"# Fast inference form\n\n{BEGIN}\n{END}\n"
        head, _, rest = page.partition(BEGIN)
        _, _, tail = rest.partition(END)
        with atomic_path(args.doc) as tmp:
            tmp.write_text(f"{head}{BEGIN}\n{markdown(table, command)}{END}{tail}")


if __name__ == "__main__":
    main()
