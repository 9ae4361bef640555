"""Add a fast inference form to a surrogate file: python scripts/fast_form.py FILE [--out NEW] [--tol 1e-3]

Distils the file's PINN into a separable form (surrogate/distill.py), reports its NRMSE against the
PINN on held-out designs and writes it into the file atomically; `predict_batch` then uses it
(`exact=True` still gives the PINN). A form that misses --tol is not written (exit status 3) unless
--force; --remove takes a form out again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # scripts/optimize.py would shadow `optimize`

from circuits.cli import user_errors  # noqa: E402


@user_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--out", type=Path, help="write here instead of over FILE")
    ap.add_argument("--designs", type=int, default=8192, help="Sobol designs the form is fitted on")
    ap.add_argument("--nodes", type=int, default=32, help="Chebyshev nodes per time segment")
    ap.add_argument("--tol", type=float, default=1e-3, help="worst held-out NRMSE vs the PINN to reach")
    ap.add_argument("--force", action="store_true", help="store the form even if it misses --tol")
    ap.add_argument("--remove", action="store_true", help="remove the file's fast form")
    args = ap.parse_args()

    from surrogate.api import load_surrogate, write_fast_form
    from surrogate.distill import build_fast_form

    if args.remove:
        write_fast_form(args.file, None, args.out)
        print(f"fast form removed: {args.out or args.file}")
        return
    model = load_surrogate(args.file)
    form = build_fast_form(model, designs=args.designs, nodes=args.nodes, tol=args.tol)
    m = form.metrics
    met = m["nrmse_vs_pinn_worst"] <= args.tol
    # predict_batch uses a stored form silently, so one that misses the tolerance is not stored
    if met or args.force:
        write_fast_form(args.file, form, args.out)
    print(f"fast form: degree {m['degree']}, {form.segments} segments, NRMSE vs PINN on {m['held_out']} held-out "
          f"designs worst {m['nrmse_vs_pinn_worst']:.2e} ({'within' if met else 'ABOVE'} tol {args.tol:g}) median "
          f"{m['nrmse_vs_pinn_median']:.2e}; built in {m['build_s']:.0f} s -> "
          f"{args.out or args.file if met or args.force else 'NOT WRITTEN (--force writes it)'}")
    if not met:
        sys.exit(3)


if __name__ == "__main__":
    main()
