"""Benchmark: batched reference solver vs ngspice on ring5 (4 ns); prints a table.

python scripts/bench_reference.py [--batches 1 64 1024] [--ngspice-designs 8] [--rtol 1e-5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from circuits import load_circuit
from circuits.ngspice import run_ngspice_batch
from circuits.simulation import simulate_tensor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--circuit", default="ring5")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--ngspice-designs", type=int, default=8)
    ap.add_argument("--rtol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    circuit = load_circuit(args.circuit)
    designs = circuit.space.sample_sobol(max(args.batches), seed=0)
    dicts = [circuit.space.to_dict(v) for v in designs[: args.ngspice_designs]]
    ng = {}
    for preset in ("accurate", "ngspice"):
        frames = run_ngspice_batch(circuit, dicts, progress=False, options=preset)
        ng[preset] = float(np.mean([f.attrs["wall_s"] for f in frames]))
    rows = []
    for B in args.batches:
        t0 = time.perf_counter()
        with torch.no_grad():
            res = simulate_tensor(circuit, designs[:B], rtol=args.rtol)
        wall = time.perf_counter() - t0
        per = wall / B
        rows.append({"B": B, "wall_s": wall, "per_design_ms": per * 1e3, "steps": res.stats["steps"],
                     "newton_iters": res.stats["newton_iterations"],
                     "ngspice_accurate_ms": ng["accurate"] * 1e3, "ngspice_default_ms": ng["ngspice"] * 1e3,
                     "speedup_vs_accurate": ng["accurate"] / per, "speedup_vs_default": ng["ngspice"] / per})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1,
                                                float_format=lambda x: f"{x:.3g}"), flush=True)
    print(f"\n{args.circuit}, tstop={circuit.tstop:g} s, reference rtol={args.rtol:g}; ngspice per design "
          f"= mean wall time of {len(dicts)} runs (subprocess) measured in this run")


if __name__ == "__main__":
    main()
