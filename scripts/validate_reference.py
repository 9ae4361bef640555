"""Reference solver vs ngspice on every circuit: nominal + N random designs; prints a table.

python scripts/validate_reference.py [--designs 8] [--circuits rc amp ring5 feram] [--rtol 1e-6]
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from circuits import load_circuit
from circuits.compare import reference_vs_ngspice
from circuits.errors import NeuroSpiceError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", type=int, default=8)
    ap.add_argument("--circuits", nargs="+", default=["rc", "amp", "ring5", "feram"])
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--output", default=None, help="optional CSV path for the table")
    args = ap.parse_args()
    rows = []
    try:
        for name in args.circuits:
            circuit = load_circuit(name)
            designs = [None] + [circuit.space.to_dict(v) for v in
                                circuit.space.sample_sobol(args.designs, seed=args.seed)]
            for k, d in enumerate(designs):
                _, m = reference_vs_ngspice(circuit, d, rtol=args.rtol)
                period_err = max(m["period_rel_error"].values(), default=float("nan"))
                rows.append({"circuit": name, "design": "nominal" if d is None else f"random{k}",
                             "worst_nrmse": m["nrmse"]["worst"], "period_rel_err": period_err,
                             "ref_s": m["reference_time_s"], "ngspice_s": m["ngspice_time_s"]})
                print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    except NeuroSpiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = pd.DataFrame(rows)
    summary = table.groupby("circuit", sort=False).agg(worst_nrmse=("worst_nrmse", "max"),
                                                         max_period_rel_err=("period_rel_err", "max"),
                                                         designs=("design", "count"))
    print("\nsummary (max over designs):")
    print(summary.to_string(float_format=lambda x: f"{x:.2e}"))
    if args.output:
        from circuits.io import atomic_path
        with atomic_path(args.output) as tmp:
            table.to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
