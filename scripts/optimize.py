"""Inverse design: python scripts/optimize.py task=ring5_freq task.target=1.2e9 [method=gradient|optuna]"""

import sys
from pathlib import Path

# this file is named like the `optimize` package: keep scripts/ from shadowing it
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402

from circuits.cli import exit_code_for_hydra, user_errors, validate  # noqa: E402
from circuits.config_check import OPTIMIZE  # noqa: E402
from circuits.result import DEFAULT_MAX_STEPS, step_budget  # noqa: E402
from optimize.run import EXIT_STATUS, check_task_argument, format_result, run_optimize, verdict  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="optimize")
@user_errors
def main(cfg) -> None:
    validate(cfg, OPTIMIZE)
    with step_budget(cfg.solver.get("max_steps") or DEFAULT_MAX_STEPS, progress=bool(cfg.progress)):
        result = run_optimize(cfg, HydraConfig.get().runtime.output_dir)
    print(format_result(result))
    print(f"result in {result['result_path']}")
    print(f"{result['task']}: {verdict(result)}")
    if EXIT_STATUS[result["status"]]:
        sys.exit(EXIT_STATUS[result["status"]])


if __name__ == "__main__":
    check_task_argument()
    exit_code_for_hydra(main, free_groups=("task.fixed.", "task.penalties."))
