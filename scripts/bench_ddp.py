"""DDP on CPU: training steps/s of 1 process vs 2 processes (gloo), one thread per process.

python scripts/bench_ddp.py [--circuit rc] [--steps 20 220] [--designs 32] [--times 64] [--width 32 --depth 3]

Every configuration trains twice through scripts/train.py (a short and a long budget); the step rate
is (long - short steps) / (long - short fit time), which cancels process start, the reference
solve for validation, the DDP rendezvous and the sanity check. Validation is switched off in
between (check_val_every_n_epoch large). Rows:
  1 proc            designs_per_batch = D           (D designs per step)
  2 proc DDP        D per rank                      (2D designs per step: same work per process)
  2 proc DDP half   D/2 per rank                    (D designs per step: same global batch)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from circuits.cli import user_errors

ROOT = Path(__file__).resolve().parent.parent


def train(outdir: Path, steps: int, designs: int, trainer: str, args) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), f"circuit={args.circuit}", f"trainer={trainer}",
           f"trainer.max_steps={steps}", f"surrogate.designs_per_batch={designs}",
           f"surrogate.times_per_design={args.times}", f"model.width={args.width}", f"model.depth={args.depth}",
           "trainer.check_val_every_n_epoch=100000", "trainer.enable_progress_bar=false",
           "surrogate.val_designs=4", "surrogate.val_points=101", f"surrogate.checkpoint_every={10 * steps}",
           f"hydra.run.dir={outdir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench_ddp: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    m = json.loads((outdir / "metrics.json").read_text())
    return {"steps": m["steps"], "fit_s": m["adam_time_s"], "wall_s": wall}


@user_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--circuit", default="rc")
    ap.add_argument("--steps", type=int, nargs=2, default=[20, 220], metavar=("SHORT", "LONG"))
    ap.add_argument("--designs", type=int, default=32, help="designs per batch per rank (D)")
    ap.add_argument("--times", type=int, default=64, help="times per design")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="repeat each pair, report the best rate")
    args = ap.parse_args()
    short, long_ = args.steps
    configs = [("1 proc", "cpu", args.designs, 1), ("2 proc DDP", "ddp", args.designs, 2),
               ("2 proc DDP half", "ddp", max(1, args.designs // 2), 2)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        for label, trainer, designs, procs in configs:
            best = None
            for r in range(args.repeats):
                a = train(Path(tmp) / f"{trainer}{designs}_{r}_s", short, designs, trainer, args)
                b = train(Path(tmp) / f"{trainer}{designs}_{r}_l", long_, designs, trainer, args)
                rate = (b["steps"] - a["steps"]) / max(b["fit_s"] - a["fit_s"], 1e-9)
                best = rate if best is None else max(best, rate)
            pts = best * designs * procs * args.times
            rows.append((label, procs, designs * procs, best, pts, b["wall_s"]))
            print(f"  {label}: {best:.1f} steps/s", file=sys.stderr, flush=True)
    base = rows[0][3]
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    print(f"circuit={args.circuit} width={args.width} depth={args.depth} times/design={args.times} "
          f"steps {short}->{long_}, 1 thread per process, {os.cpu_count()} CPUs, load avg {load}")
    print(f"{'config':<18}{'procs':>6}{'designs/step':>14}{'steps/s':>10}{'vs 1 proc':>11}"
          f"{'points/s':>12}{'wall long (s)':>15}")
    for label, procs, dps, rate, pts, wall in rows:
        print(f"{label:<18}{procs:>6}{dps:>14}{rate:>10.1f}{rate / base:>10.2f}x{pts:>12.0f}{wall:>15.1f}")


if __name__ == "__main__":
    main()
