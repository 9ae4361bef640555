"""Benchmark: batched reference solver vs ngspice on ring5 (4 ns); prints a table.

python scripts/bench_reference.py [--batches 1 64 1024] [--modes shared per_design] [--ngspice-designs 8]
                                  [--rtol 1e-5]
python scripts/bench_reference.py --accuracy     # per-design cost at matched accuracy vs ngspice

steps_mode "shared": one step sequence for the batch (chosen for the worst design, differentiable);
"per_design": every design has its own time and step (no-grad; the default for no-grad runs).
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
from circuits.cli import user_errors


@user_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--circuit", default="ring5")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--ngspice-designs", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=["shared", "per_design"], choices=["shared", "per_design"])
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (use 1 when other processes load the CPU: OpenMP barriers stall)")
    ap.add_argument("--accuracy", action="store_true",
                    help="instead: cost at matched accuracy (reference rtol sweep vs ngspice presets, "
                         "error against a tight reference run)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.accuracy:
        accuracy_table(args)
        return
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


NGSPICE_SETTINGS = {  # label -> run_ngspice deck options; ngspice's own tmax is the netlist's tstep (1 ps)
    "ngspice defaults, tmax 1p (netlist tstep)": {"options": "ngspice"},
    "ngspice defaults, tmax 10p": {"options": "ngspice", "tmax": 10e-12},
    "ngspice defaults, tmax 40p": {"options": "ngspice", "tmax": 40e-12},
    "ngspice defaults, tmax 80p (tstop/50)": {"options": "ngspice", "tmax": 80e-12},
    "ngspice accurate (reltol 1e-7, trtol 1, tmax 1p)": {"options": "accurate"},
}
REFERENCE_RTOLS = [1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6]


def worst_nrmse(y: torch.Tensor, y_true: torch.Tensor) -> float:
    """Worst NRMSE over designs and outputs of y (B, T, n) against y_true on the same grid."""
    from surrogate.module import nrmse_table

    return float(nrmse_table(y, y_true).max())


def accuracy_table(args) -> None:
    """Per-design cost of the batched reference (B = max batch) and of ngspice at matched error.

    Error: worst NRMSE over the first --ngspice-designs designs and all outputs against the
    reference at rtol 1e-8 (which agrees with ngspice's accurate preset to ~1e-4 NRMSE).
    """
    from circuits.simulation import simulate_batch

    circuit = load_circuit(args.circuit)
    B, K = max(args.batches), args.ngspice_designs
    designs = circuit.space.sample_sobol(B, seed=0)
    grid = torch.linspace(0.0, circuit.tstop, 2001, dtype=torch.float64)
    with torch.no_grad():
        _, truth = simulate_batch(circuit, designs[:K], t=grid, rtol=1e-8)
    rows = []
    dicts = [circuit.space.to_dict(v) for v in designs[:K]]
    for label, deck_options in NGSPICE_SETTINGS.items():
        frames = run_ngspice_batch(circuit, dicts, progress=False, **deck_options)
        y = torch.stack([torch.stack([torch.as_tensor(np.interp(grid.numpy(), f["time"].to_numpy(), f[o].to_numpy()))
                                      for o in circuit.outputs], dim=1) for f in frames])
        rows.append({"simulator": label, "B": 1, "per_design_ms": 1e3 * float(np.mean([f.attrs["wall_s"] for f in frames])),
                     "worst_nrmse": worst_nrmse(y, truth)})
        print(rows[-1], flush=True)
    for rtol in REFERENCE_RTOLS:
        t0 = time.perf_counter()
        with torch.no_grad():
            _, y = simulate_batch(circuit, designs, t=grid, rtol=rtol, steps="per_design")
        wall = time.perf_counter() - t0
        rows.append({"simulator": f"reference rtol {rtol:g}", "B": B, "per_design_ms": 1e3 * wall / B,
                     "worst_nrmse": worst_nrmse(y[:K], truth)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    ref = table[table.simulator.str.startswith("reference")]
    for i, row in table.iterrows():
        if row.simulator.startswith("reference"):
            continue
        ok = ref[ref.worst_nrmse <= row.worst_nrmse]
        if len(ok):
            best = ok.loc[ok.per_design_ms.idxmin()]
            table.loc[i, "matched_by"] = best.simulator
            table.loc[i, "speedup_at_matched_error"] = row.per_design_ms / best.per_design_ms
    print()
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}", na_rep="-"))
    print(f"\n{args.circuit}, tstop={circuit.tstop:g} s, {args.threads} torch thread(s); error = worst NRMSE over "
          f"{K} designs x {len(circuit.outputs)} outputs vs the reference at rtol 1e-8; the reference runs "
          f"B = {B} designs in one batched call (per-design steps); ngspice runs one design per process.")


if __name__ == "__main__":
    main()
