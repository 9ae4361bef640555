"""scripts/train.py with probes (tests only): every rank appends the collocation batches it trains on,
and every `save_surrogate` call is recorded, under $NEUROSPICE_PROBE_DIR as JSON lines.

It runs as a script because Lightning's DDP launcher starts ranks 1..N-1 by re-running the command
line, so each rank imports this file and installs the same probes."""

import json
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

import surrogate.api
import surrogate.module
from circuits.cli import exit_code_for_hydra, user_errors

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(os.environ["NEUROSPICE_PROBE_DIR"])


def _record(name: str, row: dict) -> None:
    with open(PROBE / name, "a") as f:
        f.write(json.dumps(row) + "\n")


_training_step = surrogate.module.PinnModule.training_step
_save_surrogate = surrogate.api.save_surrogate


def training_step(self, batch, batch_idx):
    t, designs = batch
    _record(f"batches_rank{self.global_rank}.jsonl",
            {"rank": self.global_rank, "world": self.trainer.world_size, "pid": os.getpid(),
             "step": self.global_step, "t": t.tolist(), "designs": designs.tolist()})
    return _training_step(self, batch, batch_idx)


def save_surrogate(*args, **kwargs):
    _record("saves.jsonl", {"pid": os.getpid(), "local_rank": int(os.environ.get("LOCAL_RANK", 0))})
    return _save_surrogate(*args, **kwargs)


surrogate.module.PinnModule.training_step = training_step
surrogate.api.save_surrogate = save_surrogate


@hydra.main(version_base="1.3", config_path=str(ROOT / "configs"), config_name="train")
@user_errors
def main(cfg) -> None:
    from surrogate.train import run_train

    m = run_train(cfg, HydraConfig.get().runtime.output_dir)
    if m:
        print(f"steps={m['steps']} nrmse_worst={m['nrmse_worst_overall']:.3e}")


if __name__ == "__main__":
    exit_code_for_hydra(main)
