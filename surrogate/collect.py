"""Gather the runs of a Hydra sweep (or any tree of Hydra run folders) into one table.

One row per run folder (a folder holding ``.hydra/config.yaml``): config columns from that file,
``overrides`` from ``.hydra/overrides.yaml``, metric columns from ``metrics.json`` with nested dicts
flattened (``nrmse_worst.v(out)``). A run without ``metrics.json`` (still running, killed, failed)
gets ``status=incomplete`` and empty metric columns; its ``last_ckpt`` column says where to resume.
Outputs are written atomically (`circuits.io`), so ``metrics.json`` is either complete or absent.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from circuits.errors import ConfigError

__all__ = ["find_runs", "run_row", "collect_runs", "write_table", "collect"]

METRICS_FILE = "metrics.json"
SKIP_SUBTREES = ("circuit", "hydra")  # circuit: netlist text and bounds; reported by name only


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under root (root itself included), sorted by job number then path."""
    root = Path(root)
    runs = {p.parent.parent for p in root.rglob(".hydra/config.yaml")}

    def key(p: Path):
        rel = p.relative_to(root).parts
        return [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in rel]

    return sorted(runs, key=key)


def _flatten(data: Any, prefix: str = "", out: dict[str, Any] | None = None,
             skip: Iterable[str] = ()) -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; lists become JSON text; multi-line strings are dropped."""
    out = {} if out is None else out
    if isinstance(data, dict):
        for k, v in data.items():
            name = f"{prefix}{k}"
            if name in skip:
                continue
            _flatten(v, f"{name}.", out, skip)
        return out
    key = prefix[:-1]
    if isinstance(data, (list, tuple)):
        out[key] = json.dumps(data)
    elif isinstance(data, str) and "\n" in data:
        pass
    else:
        out[key] = data
    return out


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that needs Hydra's resolvers (${now:...}): keep it as text
        return OmegaConf.to_container(cfg, resolve=False)


def run_row(run: Path, root: Path | None = None) -> dict[str, Any]:
    """One table row: run, status, config columns, overrides, metric columns."""
    run = Path(run)
    row: dict[str, Any] = {"run": str(run.relative_to(root)) if root is not None else str(run)}
    try:
        cfg = _load_yaml(run / ".hydra" / "config.yaml") or {}
        overrides_file = run / ".hydra" / "overrides.yaml"
        overrides = _load_yaml(overrides_file) if overrides_file.exists() else []
    except Exception:  # Hydra's own files, written when the job starts: killed right then
        row.update(status="unreadable config", last_ckpt=None)
        return row
    metrics_file = run / METRICS_FILE
    metrics, status = None, "incomplete"
    if metrics_file.exists():
        try:
            metrics = json.loads(metrics_file.read_text())
            status = "ok"
        except (OSError, ValueError):  # atomic writes make this unexpected: never trust it
            status = "unreadable"
    row["status"] = status
    circuit = cfg.get("circuit")
    if isinstance(circuit, dict):
        row["circuit"] = circuit.get("name")
    elif circuit is not None:
        row["circuit"] = circuit
    row.update(_flatten(cfg, skip=SKIP_SUBTREES))
    row["overrides"] = " ".join(str(o) for o in overrides or [])
    last = run / "checkpoints" / "last.ckpt"
    row["last_ckpt"] = str(last) if last.exists() else None
    if metrics is not None:
        flat = _flatten(metrics)
        for k, v in flat.items():
            if k in row and row[k] == v:  # e.g. the circuit name, already a config column
                continue
            row[k if k not in row else f"metrics.{k}"] = v
    return row


def collect_runs(root: str | Path) -> pd.DataFrame:
    """The table of every run under root (ConfigError when root is missing or holds no runs)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"collect: no such directory: {root}")
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"collect: no Hydra runs (.hydra/config.yaml) under {root}")
    return pd.DataFrame([run_row(r, root) for r in runs])


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns that mix types (e.g. a number in one run, text in another) become text."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        kinds = {type(v) for v in frame[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[col] = [None if v is None else str(v) for v in frame[col]]
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """CSV or Parquet by extension, written atomically."""
    from circuits import io

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with io.atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    elif suffix in (".parquet", ".pq"):
        io.write_parquet(path, _parquet_safe(frame))
    else:
        raise ConfigError(f"collect: output {path}: use a .csv or .parquet file name")
    return path


def collect(root: str | Path, output: str | Path | None = None) -> tuple[pd.DataFrame, Path]:
    """Collect the runs under root and write the table (default: <root>/table.csv)."""
    if output is not None and not re.search(r"\.(csv|parquet|pq)$", str(output), re.IGNORECASE):
        raise ConfigError(f"collect: output {output}: use a .csv or .parquet file name")
    frame = collect_runs(root)
    path = write_table(frame, Path(output) if output is not None else Path(root) / "table.csv")
    return frame, path
