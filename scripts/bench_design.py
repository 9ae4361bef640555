"""Inverse-design benchmark: K targets per task × methods -> simulator calls, wall time, verified error.

python scripts/bench_design.py --tasks rc_delay ring5_freq [--k 5] [--methods gradient optuna-ngspice ...]
       [--trials 100] [--csv docs/bench_design.csv]
Targets are spread over the achievable range (quantiles 0.1 .. 0.9 of the measurement over corners +
Sobol designs, estimated by the surrogate if there is one, else by the reference solver).  Methods:
gradient (surrogate, with output space mapping), optuna-ngspice, optuna-reference, reference_gradient.
Break-even: the number N of design queries above which training the surrogate once plus N gradient
runs costs less wall time than N Optuna runs, N* = T_train / (t_optuna - t_gradient).
Every number is measured in this run; nothing is cached between runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # scripts/optimize.py would shadow the `optimize` package

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from circuits.cli import user_errors  # noqa: E402

CONFIGS = str(ROOT / "configs")
METHODS = ["gradient", "optuna-ngspice", "optuna-reference", "reference_gradient"]


def _overrides(method: str) -> list[str]:
    if method.startswith("optuna-"):
        return ["method=optuna", f"simulator={method.removeprefix('optuna-')}"]
    return [f"method={method}"]


def targets(task_name: str, k: int, samples: int = 256) -> tuple[list[float], str]:
    """K targets at quantiles 0.1..0.9 of the measurement over the free box, and what estimated them."""
    from optimize.evaluators import ReferenceEvaluator, SurrogateEvaluator
    from optimize.gradient import prescreen_designs
    from optimize.run import load_task_surrogate
    from optimize.tasks import load_task

    task = load_task(task_name)
    model = load_task_surrogate(task, None, required=False)
    if model is not None:
        ev, src = SurrogateEvaluator(model), "surrogate"
    else:
        ev, src, samples = ReferenceEvaluator(task.circuit), "reference", min(samples, 24)
    U = prescreen_designs(len(task.free), samples, seed=123)
    with torch.no_grad():
        m = ev.measure(task.designs(U), [task.objective.measurement])[:, 0]
    m = m[torch.isfinite(m)].numpy()
    qs = np.linspace(0.1, 0.9, k)
    return [float(x) for x in np.quantile(m, qs)], src


def run_one(task: str, target: float, method: str, trials: int, outdir: Path, optuna_stop: float = 1.0) -> dict:
    """One run_optimize call; the row of the table."""
    from hydra import compose, initialize_config_dir

    from optimize.run import run_optimize

    overrides = [f"task={task}", f"task.target={target!r}", *_overrides(method), "progress=false",
                 f"optuna.n_trials={trials}", f"optuna.stop_fraction={optuna_stop!r}", "optuna.storage=memory",
                 "range.samples=0"]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="optimize", overrides=overrides)
    r = run_optimize(cfg, outdir)
    ng, ref = r["verified"].get("ngspice", {}), r["verified"].get("reference", {})
    return {"task": task, "target": target, "method": method, "simulator_calls": r["simulator_calls"],
            "wall_s": r["wall_time_s"],
            "ngspice_err": abs(ng["rel_error"]) if ng.get("status") == "ok" else math.nan,
            "reference_err": abs(ref["rel_error"]) if ref.get("status") == "ok" else math.nan,
            "in_range": r["in_range"]}


@user_errors
def main() -> None:
    from circuits.errors import NeuroSpiceError
    from optimize.run import default_surrogate_path
    from optimize.tasks import load_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["rc_delay", "ring5_freq", "amp_gain", "feram_switch"])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--trials", type=int, default=100, help="Optuna budget per target")
    ap.add_argument("--optuna-stop", type=float, default=1.0,
                    help="Optuna stops once |rel err| <= this × the task tolerance (0.5: the gradient "
                         "method's acceptance, for a comparison at the same final error)")
    ap.add_argument("--csv", type=Path, help="also write every run as CSV")
    args = ap.parse_args()
    from tqdm.auto import tqdm

    base = ROOT / "outputs" / "bench_design" / time.strftime("%Y-%m-%d_%H-%M-%S")
    rows, summary = [], []
    for task in args.tasks:
        tg, src = targets(task, args.k)
        print(f"{task}: targets {', '.join(f'{x:.4g}' for x in tg)} (quantiles 0.1..0.9 by {src})", flush=True)
        circuit = load_task(task).circuit.name
        for method in args.methods:
            if method == "gradient" and not default_surrogate_path(circuit).is_file():
                print(f"  {method}: skipped (no pretrained/{circuit}.pt)")
                continue
            for i, target in enumerate(tqdm(tg, desc=f"{task} {method}", leave=False)):
                try:
                    rows.append(run_one(task, target, method, args.trials, base / task / method / str(i),
                                        args.optuna_stop))
                except NeuroSpiceError as exc:
                    print(f"  {method} target {target:.4g}: {exc}")
        df = pd.DataFrame([r for r in rows if r["task"] == task])
        if df.empty:
            continue
        tol = load_task(task).tolerance
        agg = df.groupby("method", sort=False).agg(
            calls=("simulator_calls", "mean"), wall_s=("wall_s", "mean"),
            ngspice_err_max=("ngspice_err", "max"), ngspice_err_median=("ngspice_err", "median"),
            within_tol=("ngspice_err", lambda e: f"{int((e <= tol).sum())}/{len(e)}"))
        agg.insert(0, "task", task)
        print(agg.to_string(float_format=lambda x: f"{x:.3g}"), flush=True)
        if "gradient" in agg.index:
            from surrogate.api import load_surrogate

            train_s = float(load_surrogate(default_surrogate_path(circuit)).metrics.get("train_time_s", math.nan))
            for m in agg.index:
                if m.startswith("optuna"):
                    gain = agg.loc[m, "wall_s"] - agg.loc["gradient", "wall_s"]
                    n = train_s / gain if gain > 0 else math.inf
                    line = (f"  break-even vs {m}: surrogate training {train_s:.0f} s / ({agg.loc[m, 'wall_s']:.1f} - "
                            f"{agg.loc['gradient', 'wall_s']:.1f}) s per query = {n:.1f} queries")
                    print(line)
                    summary.append(line)
        print(flush=True)
    if args.csv and rows:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.csv, index=False)
        print(f"runs in {args.csv}")


if __name__ == "__main__":
    main()
