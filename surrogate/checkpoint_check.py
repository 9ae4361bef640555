"""Check a Lightning checkpoint before resuming from it: readable, complete, of the same circuit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from circuits.errors import ConfigError

__all__ = ["check_resume_checkpoint"]


def check_resume_checkpoint(path: str | Path, circuit_cfg: dict[str, Any]) -> None:
    """Raise a one-line ConfigError if ``path`` cannot resume a run of the circuit ``circuit_cfg``."""
    import pickle

    import torch

    where = f"ckpt_path={path}"
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{where}: no such checkpoint file")
    try:  # weights_only: a checkpoint is tensors and plain containers; nothing in it runs on load
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"{where}: not a NeuroSPICE training checkpoint (damaged, or holds Python objects)") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated files
        raise ConfigError(f"{where}: not a readable checkpoint (truncated or damaged: {type(exc).__name__})") from None
    hp = blob.get("hyper_parameters") if isinstance(blob, dict) else None
    if not isinstance(hp, dict) or not isinstance(blob.get("state_dict"), dict) or "circuit_cfg" not in hp:
        raise ConfigError(f"{where}: not a NeuroSPICE training checkpoint (no state_dict/hyper_parameters)")
    theirs = hp["circuit_cfg"] if isinstance(hp["circuit_cfg"], dict) else {}
    mine = {k: circuit_cfg.get(k) for k in ("name", "stages")}
    other = {k: theirs.get(k) for k in mine}
    if mine != other or sorted(theirs.get("params") or {}) != sorted(circuit_cfg.get("params") or {}):
        raise ConfigError(f"{where}: checkpoint of circuit {_describe(theirs)}, but this run trains "
                          f"{_describe(circuit_cfg)}")


def _describe(circuit_cfg: dict[str, Any]) -> str:
    """'ring' (stages=3) over [cload, wn, wp]."""
    stages = f" (stages={circuit_cfg['stages']})" if circuit_cfg.get("stages") is not None else ""
    return f"'{circuit_cfg.get('name')}'{stages} over [{', '.join(sorted(circuit_cfg.get('params') or {}))}]"
