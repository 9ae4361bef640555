"""Surrogate benchmark: train (or load) per circuit, accuracy vs the reference, inference speed.

python scripts/bench_surrogate.py --circuits rc amp ring5 feram [--fixed] [--steps 3000]
python scripts/bench_surrogate.py --surrogate outputs/train/rc/<run>/surrogate.pt   # inference only
Prints one table row per circuit; every number is measured in this run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


def train(circuit: str, fixed: bool, steps: int, extra: list[str], outdir: Path) -> dict:
    """Train one surrogate with the Hydra config and return its metrics."""
    from hydra import compose, initialize_config_dir

    from surrogate.train import run_train

    overrides = [f"circuit={circuit}", f"surrogate.fixed_params={str(fixed).lower()}",
                 f"trainer.max_steps={steps}", "trainer.enable_progress_bar=false", *extra]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return run_train(cfg, outdir)


def inference(path: Path, designs: int = 1000, points: int = 500, ngspice_runs: int = 4) -> dict:
    """Wall time of predicting `designs` × `points`, and ngspice's wall time per design."""
    from circuits.ngspice import ngspice_available, run_ngspice_batch
    from surrogate.api import load_surrogate

    model = load_surrogate(path)
    c = model.circuit
    P = c.space.sample_uniform(designs, torch.Generator().manual_seed(1))
    t = torch.linspace(0, c.tstop, points, dtype=torch.float64)
    with torch.no_grad():
        model.predict_batch(t, P[:8])
        t0 = time.perf_counter()
        model.predict_batch(t, P)
        wall = time.perf_counter() - t0
    row = {"inference_ms": wall * 1e3, "designs": designs, "points": points}
    if ngspice_available():
        frames = run_ngspice_batch(c, [c.space.to_dict(p) for p in P[:ngspice_runs]], progress=False)
        ng = float(np.mean([f.attrs["wall_s"] for f in frames]))
        row["ngspice_ms_per_design"] = ng * 1e3
        row["speedup_per_design"] = ng / (wall / designs)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--circuits", nargs="+", default=["rc", "amp", "ring5", "feram"])
    ap.add_argument("--fixed", action="store_true", help="train at the nominal design only")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--surrogate", type=Path, help="skip training: benchmark this surrogate file")
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for training")
    args = ap.parse_args()
    rows = []
    if args.surrogate:
        rows.append({"surrogate": str(args.surrogate), **inference(args.surrogate)})
    else:
        for name in args.circuits:
            out = Path(tempfile.mkdtemp(prefix=f"bench_{name}_"))
            m = train(name, args.fixed, args.steps, args.override, out)
            rows.append({"circuit": name, "fixed": args.fixed, "steps": m["steps"],
                         "train_s": m["train_time_s"], "nrmse_median": m["nrmse_median_overall"],
                         "nrmse_worst": m["nrmse_worst_overall"], "designs": m["designs"],
                         **inference(out / "surrogate.pt"), "run_dir": str(out)})
            print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3g}"))


if __name__ == "__main__":
    main()
