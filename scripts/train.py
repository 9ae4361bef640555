"""Train a PINN surrogate over a circuit's design space: python scripts/train.py circuit=ring5"""

import sys
from pathlib import Path

# keep scripts/ (which holds optimize.py) from shadowing the `optimize` package (headline measurements)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402

from circuits.cli import exit_code_for_hydra, user_errors, validate  # noqa: E402
from circuits.config_check import TRAIN  # noqa: E402
from circuits.errors import ConfigError  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
@user_errors
def main(cfg) -> None:
    from surrogate.train import circuit_config, run_train

    validate(cfg, TRAIN)
    circuit_cfg = circuit_config(cfg)  # a bad netlist or space is reported before any setup
    if cfg.get("ckpt_path"):
        from surrogate.checkpoint_check import check_resume_checkpoint

        check_resume_checkpoint(cfg.ckpt_path, circuit_cfg)
    outdir = HydraConfig.get().runtime.output_dir
    try:
        m = run_train(cfg, outdir)
    except RuntimeError as exc:  # a checkpoint of the same circuit but another network layout
        if cfg.get("ckpt_path") and "state_dict" in str(exc):
            raise ConfigError(f"ckpt_path={cfg.ckpt_path}: checkpoint of another network layout "
                              f"(model keys differ from this run's)") from None
        raise
    if not m:  # a DDP rank other than 0: rank 0 reports
        return
    if m.get("stalled_windows"):
        print(f"warning: window(s) {m['stalled_windows']} stalled far above the others (train.log): "
              f"the waveform from there on may be off")
    print(f"results in {outdir}")
    verdict = "target met" if m["target_met"] else "TARGET MISSED"
    headline = ""
    if "headline_target" in m:
        headline = (f", {m['headline']} error worst {m['headline_err_worst']:.2e} "
                    f"(target {m['headline_target']:.2e})")
    print(f"{m['circuit']}: held-out NRMSE worst {m['nrmse_worst_overall']:.2e} (median "
          f"{m['nrmse_median_overall']:.2e}) over {m['designs']} designs, target {m['target_nrmse']:.2e} "
          f"(median {m['target_median_nrmse']:.2e}){headline}: "
          f"{verdict}; {len(m['window_edges']) - 1} windows, {m['total_time_s']:.0f} s")
    if not m["target_met"]:
        sys.exit(3)


if __name__ == "__main__":
    exit_code_for_hydra(main, free_groups=("space.",))
