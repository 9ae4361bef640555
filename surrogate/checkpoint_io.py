"""Lightning checkpoints written atomically: a temporary file in the target's folder, then a rename.

Lightning's own `TorchCheckpointIO` serialises the checkpoint in memory and then writes it through an
fsspec transaction, whose temporary file lives in the *system* temp folder; committing it is a
`shutil.move`, i.e. a copy when the output folder is on another file system (the usual case on a
cluster: /tmp is local, outputs are on NFS/Lustre). A run killed during that copy leaves a truncated
``last.ckpt`` that a later ``ckpt_path=.../last.ckpt`` would try to resume from. Here the temporary
file is created next to the target (same file system), flushed to disk, and `os.replace`d over it:
the target is always either the previous complete checkpoint or the new complete one. A write that
is interrupted leaves only a hidden ``.<name>.<random>.tmp`` (removed on an exception, left behind by
SIGKILL), which nothing reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from circuits.io import atomic_path

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose saves to local paths are atomic (temp file + fsync + os.replace)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("`Trainer.save_checkpoint(..., storage_options=...)` is not supported by "
                            f"{type(self).__name__}")
        if "://" in str(path):  # remote file systems: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
