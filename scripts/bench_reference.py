"""Benchmark: batched reference solver vs ngspice on ring5 (4 ns); prints a table.

python scripts/bench_reference.py [--batches 1 64 1024] [--modes shared per_design] [--ngspice-designs 8]
                                  [--rtol 1e-5]

steps_mode "shared": one step sequence for the batch (chosen for the worst design, differentiable);
"per_design": every design has its own time and step (no-grad; the default for no-grad batches).
steps: the shared step count, or min/mean/max accepted steps over the designs; iterations: batched
Newton solves (= steps + rejections in shared mode); newton_iters: batched device evaluations in Newton.
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
    ap.add_argument("--modes", nargs="+", default=["shared", "per_design"], choices=["shared", "per_design"])
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (use 1 when other processes load the CPU: OpenMP barriers stall)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    circuit = load_circuit(args.circuit)
    designs = circuit.space.sample_sobol(max(args.batches), seed=0)
    dicts = [circuit.space.to_dict(v) for v in designs[: args.ngspice_designs]]
    ng = {}
    for preset in ("accurate", "ngspice"):
        frames = run_ngspice_batch(circuit, dicts, progress=False, options=preset)
        ng[preset] = float(np.mean([f.attrs["wall_s"] for f in frames]))
    rows = []
    for B in args.batches:
        for mode in args.modes:
            t0 = time.perf_counter()
            with torch.no_grad():
                res = simulate_tensor(circuit, designs[:B], rtol=args.rtol, steps=mode)
            wall = time.perf_counter() - t0
            per = wall / B
            st = res.stats
            if mode == "shared":
                steps, iters = str(st["steps"]), st["steps"] + st["rejected"]
            else:
                steps, iters = f"{st['steps_min']}/{st['steps_mean']:.0f}/{st['steps_max']}", st["iterations"]
            rows.append({"B": B, "steps_mode": mode, "wall_s": wall, "per_design_ms": per * 1e3,
                         "steps": steps, "iterations": iters, "newton_iters": st["newton_iterations"],
                         "ngspice_accurate_ms": ng["accurate"] * 1e3, "ngspice_default_ms": ng["ngspice"] * 1e3,
                         "speedup_vs_accurate": ng["accurate"] / per, "speedup_vs_default": ng["ngspice"] / per})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1,
                                                    float_format=lambda x: f"{x:.3g}"), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"\n{args.circuit}, tstop={circuit.tstop:g} s, reference rtol={args.rtol:g}, {args.threads} torch "
          f"thread(s); ngspice per design "
          f"= mean wall time of {len(dicts)} runs (subprocess) measured in this run")


if __name__ == "__main__":
    main()
