"""Monte Carlo yield on a surrogate: python scripts/yield.py task=ring5_freq task.target=1e9 task.tolerance=0.05
samples=100000 variation.cload=0.05 variation.wn=0.05 variation.wp=0.05 [verify=200]"""

import sys
from pathlib import Path

# keep scripts/ (which holds optimize.py) from shadowing the `optimize` package
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402

from circuits.cli import exit_code_for_hydra, user_errors, validate  # noqa: E402
from circuits.config_check import YIELD  # noqa: E402
from optimize.yield_run import format_yield, run_yield  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="yield")
@user_errors
def main(cfg) -> None:
    validate(cfg, YIELD)
    result = run_yield(cfg, HydraConfig.get().runtime.output_dir)
    print(format_yield(result))
    print(f"results in {result['result_path']}")


if __name__ == "__main__":
    exit_code_for_hydra(main, free_groups=("task.fixed.", "task.penalties.", "variation.", "centre."))
