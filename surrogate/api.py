"""Save and load surrogates (`surrogate.models`): the trained PINN as a differentiable map (t, p) -> waveforms.

Inference needs only `circuits` (netlist, DAE, DC operating point for the initial condition) and
torch: no Lightning, no Hydra.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from circuits.circuit import circuit_from_config
from circuits.errors import NeuroSpiceError
from surrogate.fast_form import FastForm, net_fingerprint
from surrogate.models import MODEL_KINDS, Surrogate, SurrogateError
from surrogate.physics import Layout

__all__ = ["Surrogate", "SurrogateError", "load_surrogate", "save_surrogate", "write_fast_form"]

FORMAT_VERSION = 4  # 4: model kind; 3: per-design time scale; 2: time windows (ModuleList); 1 (one net) still loads


def _model_from_blob(blob: dict[str, Any], circuit, layout: Layout) -> Surrogate:
    """The model a surrogate file describes: its `kind` (files before format 4: read off the layout)."""
    net = dict(blob["net"])
    coef = blob.get("time_coef")
    kind = blob.get("kind") or _legacy_kind(net)
    cls = MODEL_KINDS.get(kind)
    if cls is None:
        raise SurrogateError(f"unknown surrogate model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    if kind == "limit_cycle":
        net["time_coef"] = coef if coef is not None and len(coef) else None
    for legacy in ("time_scale",) + {"plain": ("windows", "window_edges"), "limit_cycle": ("window_edges",)}.get(kind, ()):
        net.pop(legacy, None)
    if kind != "limit_cycle":
        for key in ("periodic_from", "period", "periodic_harmonics", "periodic_settle", "frequency_degree"):
            net.pop(key, None)
    return cls(circuit, layout, **net)


def _legacy_kind(net: dict[str, Any]) -> str:
    """The model kind of a file written before kinds were recorded."""
    if net.get("periodic_from") is not None:
        return "limit_cycle"
    if net.get("time_scale", "none") != "none":
        raise SurrogateError("a warped-time model without a limit cycle is no longer supported; retrain it")
    single = int(net.get("windows", 1)) == 1 and not net.get("window_edges") and not net.get("state_input")
    return "plain" if single else "windowed"


def save_surrogate(model: Surrogate, path: str | Path, metrics: Mapping[str, Any] | None = None) -> None:
    """Write the self-contained surrogate file atomically."""
    from circuits.io import atomic_path

    lay = model.physics.layout
    blob = {"format": "neurospice-surrogate", "version": FORMAT_VERSION,
            "kind": model.kind, "circuit_config": model.circuit.config, "net": model.config(),
            "layout": {k: getattr(lay, k) for k in ("pinned", "differential", "learned", "x_scale", "row_scale", "solved")},
            "state_dict": model.nets.state_dict(), "metrics": _plain(dict(metrics or {})),
            "time_coef": getattr(model, "time_coef", torch.zeros(0, dtype=torch.float64))}
    if model.fast_form is not None:  # optional key: readers without fast forms ignore it
        blob["fast_form"] = model.fast_form.to_blob()
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def write_fast_form(path: str | Path, form: FastForm | None, out: str | Path | None = None) -> None:
    """Add (or with None remove) a fast form in a surrogate file, everything else kept; atomic write to out or path."""
    from circuits.io import atomic_path

    blob = _read_blob(Path(path))
    blob.pop("fast_form", None)
    if form is not None:
        blob["fast_form"] = form.to_blob()
    with atomic_path(out or path) as tmp:
        torch.save(blob, tmp)


#: keys every surrogate file holds (format 1 files may lack time_coef)
_REQUIRED_KEYS = ("format", "version", "circuit_config", "net", "layout", "state_dict")

#: classes a surrogate file may hold besides tensors and plain containers (torch.load's allow-list);
#: empty: save_surrogate writes only tensors, dicts, lists, strings and numbers
SAFE_GLOBALS: tuple[type, ...] = ()


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python numbers/lists (loadable with weights_only)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, Tensor):  # numpy scalar or array
        return value.tolist()
    return value


def _read_blob(path: Path) -> dict[str, Any]:
    """The file's dictionary, read with ``weights_only=True``: no code in a file runs on load."""
    import pickle

    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = ("it holds Python objects a surrogate never holds; refused without running them"
                if "GLOBAL" in str(exc) else "damaged or not a torch file")
        raise SurrogateError(f"{path}: not a NeuroSPICE surrogate file ({what})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated/corrupt files
        raise SurrogateError(f"{path}: not a readable surrogate file (truncated or damaged: "
                             f"{type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != "neurospice-surrogate":
        raise SurrogateError(f"{path}: not a NeuroSPICE surrogate file")
    missing = [k for k in _REQUIRED_KEYS if k not in blob]
    if missing:
        raise SurrogateError(f"{path}: damaged surrogate file (missing {', '.join(missing)})")
    if blob["version"] not in (1, 2, 3, FORMAT_VERSION):
        raise SurrogateError(f"{path}: surrogate format version {blob['version']} "
                             f"(this NeuroSPICE reads {FORMAT_VERSION})")
    for key in ("circuit_config", "net", "layout", "state_dict"):
        if not isinstance(blob[key], dict):
            raise SurrogateError(f"{path}: damaged surrogate file ({key} is a {type(blob[key]).__name__})")
    return blob


def load_surrogate(path: str | Path) -> Surrogate:
    """Load a surrogate file written by `save_surrogate` (one-line SurrogateError if unusable)."""
    path = Path(path)
    if not path.is_file():
        raise SurrogateError(f"{path}: no such surrogate file" if not path.is_dir() else
                             f"{path}: is a directory, not a surrogate file")
    blob = _read_blob(path)
    try:
        circuit = circuit_from_config(blob["circuit_config"], source=str(path))
        model = _model_from_blob(blob, circuit, Layout(**blob["layout"]))
        state = blob["state_dict"]
        if blob["version"] == 1:  # one network, saved before time windows existed
            state = {f"0.{k}": v for k, v in state.items()}
        model.nets.load_state_dict(state)
    except NeuroSpiceError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as exc:
        # a file whose network description and weights do not fit each other (edited, or spliced)
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        detail = (lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else
                  (lines[0] if lines else type(exc).__name__))
        raise SurrogateError(f"{path}: damaged surrogate file (its network does not match its weights: "
                             f"{detail[:200]})") from None
    model.metrics = blob.get("metrics", {})
    model.fast_form = _fast_form(blob, model, path)
    model.eval()
    return model


def _fast_form(blob: dict[str, Any], model: Surrogate, path: Path) -> FastForm | None:
    """The file's fast form, if it has one made from exactly these network weights."""
    raw = blob.get("fast_form")
    if raw is None:
        return None
    try:
        form = FastForm.from_blob(raw)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise SurrogateError(f"{path}: damaged surrogate file (fast form: {exc})") from None
    if form.fingerprint != net_fingerprint(model.nets):
        warnings.warn(f"{path}: fast form ignored (made from other network weights); "
                      "rebuild it with scripts/fast_form.py", stacklevel=3)
        return None
    return form
