"""Simulate a circuit with the reference solver and ngspice: python scripts/simulate.py circuit=ring5"""

import hydra
from hydra.core.hydra_config import HydraConfig

from circuits.cli import exit_code_for_hydra, run_simulate, user_errors, validate
from circuits.config_check import SIMULATE
from circuits.result import DEFAULT_MAX_STEPS, step_budget


@hydra.main(version_base="1.3", config_path="../configs", config_name="simulate")
@user_errors
def main(cfg) -> None:
    validate(cfg, SIMULATE)
    outdir = HydraConfig.get().runtime.output_dir
    with step_budget(cfg.solver.get("max_steps") or DEFAULT_MAX_STEPS):
        metrics = run_simulate(cfg, outdir)
    worst = metrics.get("nrmse", {}).get("worst")
    print(f"{metrics['circuit']}: reference {metrics['reference_time_s']:.2f} s"
          + (f", ngspice {metrics['ngspice_time_s']:.2f} s, worst NRMSE {worst:.2e}" if worst is not None else ""))
    print(f"results in {outdir}")


if __name__ == "__main__":
    exit_code_for_hydra(main)
