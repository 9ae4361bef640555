"""How a training run starts and stops: DDP launch checks, SIGTERM as a failure that says how to resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from circuits.errors import ConfigError, NeuroSpiceError

__all__ = ["check_ddp_launch", "TrainingInterrupted", "interrupted", "stop_if_signalled"]


class TrainingInterrupted(NeuroSpiceError):
    """Training was stopped by a signal (SIGTERM); the message names the checkpoint to resume from."""


def interrupted(trainer, outdir: str | Path) -> TrainingInterrupted:
    """The error for a run stopped by SIGTERM (Lightning itself exits with status 0)."""
    last = Path(outdir) / "checkpoints" / "last.ckpt"
    resume = (f"resume with ckpt_path={last}" if last.exists() else "no checkpoint was written yet")
    return TrainingInterrupted(f"training stopped by SIGTERM at step {trainer.global_step}; {resume}")


def stop_if_signalled(module) -> None:
    """Raise Lightning's SIGTERMException once the module's trainer has received SIGTERM.

    Lightning checks its flag between batches only; a window's optimiser (minutes inside one
    batch hook) and the target loop (after the last batch) call this at every step, so a stopped
    run ends within one loss evaluation and says how to resume."""
    trainer = getattr(module, "_trainer", None)
    if trainer is not None and trainer.received_sigterm:
        from lightning.pytorch.utilities.exceptions import SIGTERMException
        raise SIGTERMException()


_IN_PROCESS = ("spawn", "fork", "notebook")


def _device_count(devices: Any) -> int:
    if isinstance(devices, int):
        return devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        return int(devices)
    return 1  # "auto": Lightning decides; nothing to check


def check_ddp_launch(trainer_kw: Mapping[str, Any]) -> None:
    """Refuse a script-relaunching DDP run inside a Hydra multirun sweep (ConfigError, one line).

    ``strategy=ddp`` starts ranks 1..N-1 by re-running the command line (Lightning's subprocess
    launcher, which pins ``hydra.run.dir`` for a single run). Inside ``-m`` that command line is the
    whole sweep (or, under the joblib launcher, a worker process), so every job would start a new
    sweep. A cluster that starts the ranks itself (SLURM srun, torchrun) is fine.
    """
    strategy = str(trainer_kw.get("strategy", "auto"))
    if not strategy.startswith("ddp") or any(k in strategy for k in _IN_PROCESS):
        return
    if _device_count(trainer_kw.get("devices", 1)) * int(trainer_kw.get("num_nodes", 1) or 1) <= 1:
        return
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(
            f"trainer.strategy={strategy} with {trainer_kw.get('devices')} devices cannot run inside a "
            "multirun sweep (-m): Lightning starts the extra ranks by re-running the command line. "
            "Run DDP jobs one at a time (scripts/train.py trainer=ddp ...), or sweep them on SLURM "
            "(-m hydra/launcher=slurm hydra.launcher.tasks_per_node=<devices>), where srun starts the ranks")
