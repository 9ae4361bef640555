"""Validate a script's composed config before any work: one ConfigError line per wrong key.

Each script has a schema: a list of `Rule`s, each naming a dotted key (``solver.rtol``, or
``params.*`` for every child of ``params``) and what it may hold. A key the config does not have is
skipped (a config group may drop a knob without touching this file); a value that breaks its rule
raises ``ConfigError("solver.rtol=abc: must be a number > 0")``: the key, the value as given, and
what is allowed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from circuits.errors import ConfigError

__all__ = ["Rule", "check_config", "number", "integer", "boolean", "choice", "spice_number",
           "input_file", "output_file", "output_dir", "optuna_storage", "SIMULATE", "OPTIMIZE", "TRAIN",
           "check_output_file", "check_output_dir"]

#: a check returns the error text ("must be ...") for a bad value, or None
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Rule:
    """``key`` (dotted; ``a.*`` = every child of ``a``) must pass ``check``; None allowed if ``optional``."""

    key: str
    check: Check
    optional: bool = False


def _show(value: Any) -> str:
    """The value as the user typed it (strings quoted only when empty or spaced)."""
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool, not a string), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _bounds_text(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    parts = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
             f"< {lt:g}" if lt is not None else "", f"<= {le:g}" if le is not None else ""]
    return " and ".join(p for p in parts if p)


def _in_bounds(x: float, gt, ge, lt, le) -> bool:
    return ((gt is None or x > gt) and (ge is None or x >= ge) and (lt is None or x < lt)
            and (le is None or x <= le))


def number(gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None, finite: bool = True) -> Check:
    """A real number (finite unless ``finite=False``) within the given bounds."""
    what = "a " + ("finite " if finite else "") + "number" + (" " + _bounds_text(gt, ge, lt, le)
                                                             if _bounds_text(gt, ge, lt, le) else "")

    def check(value: Any) -> str | None:
        x = _real(value)
        if x is None or (finite and not math.isfinite(x)) or math.isnan(x) or not _in_bounds(x, gt, ge, lt, le):
            return f"must be {what}"
        return None
    return check


def integer(ge: int | None = None, le: int | None = None) -> Check:
    """A whole number within the given bounds."""
    what = "an integer" + (" " + _bounds_text(None, ge, None, le) if _bounds_text(None, ge, None, le) else "")

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not _in_bounds(value, None, ge, None, le):
            return f"must be {what}"
        return None
    return check


def spice_number(value: Any) -> str | None:
    """A finite number, SPICE suffixes allowed (``2k``, ``10f``)."""
    from circuits.expr import parse_number

    x = _real(value)
    if x is None and isinstance(value, str):
        x = parse_number(value)
    if x is None or not math.isfinite(x):
        return "must be a finite number (SPICE suffixes allowed: 2k, 10f)"
    return None


def spice_float(value: Any) -> float:
    """The float of a value `spice_number` accepted."""
    from circuits.expr import parse_number

    x = _real(value)
    return x if x is not None else float(parse_number(str(value)))


def boolean(value: Any) -> str | None:
    """true or false (not 'yes', 'maybe', 1)."""
    return None if isinstance(value, bool) else "must be true or false"


def choice(*options: str) -> Check:
    """One of ``options``."""
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in options else f"must be one of {', '.join(options)}"
    return check


def text(value: Any) -> str | None:
    """A non-empty string."""
    return None if isinstance(value, str) and value.strip() else "must be a non-empty name"


def input_file(value: Any) -> str | None:
    """An existing readable file."""
    if not isinstance(value, str) or not value:
        return "must be a file path"
    p = Path(value).expanduser()
    if p.is_dir():
        return "is a directory, not a file"
    if not p.is_file():
        return "no such file"
    if not os.access(p, os.R_OK):
        return "file is not readable"
    return None


def _first_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_dir_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder``, or None. The folder is created (the run would
    create it anyway) and a probe file written and removed: permission bits alone say nothing to
    root, nor about read-only or virtual file systems."""
    import tempfile

    base = _first_existing(folder.resolve())
    if not base.is_dir():
        return f"{base} is a file, not a directory"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    return None


def check_output_file(value: Any) -> str | None:
    """A path where a file can be written: not a directory, its folder creatable and writable."""
    if not isinstance(value, str) or not value:
        return "must be a file path"
    p = Path(value).expanduser()
    if p.is_dir() or value.endswith(("/", os.sep)):
        return "is a directory; give a file path"
    if p.exists() and not os.access(p, os.W_OK):
        return "file is not writable"
    return _writable_dir_problem(p.parent)


def check_output_dir(value: Any) -> str | None:
    """A folder where files can be written (created if missing)."""
    if not isinstance(value, str) or not value:
        return "must be a directory path"
    p = Path(value).expanduser()
    if p.exists() and not p.is_dir():
        return "is a file, not a directory"
    return _writable_dir_problem(p)


output_file = check_output_file
output_dir = check_output_dir


def optuna_storage(value: Any) -> str | None:
    """default, memory, journal:PATH, or an SQLAlchemy database URL whose driver is installed."""
    allowed = "must be default, memory, journal:PATH or a database URL such as sqlite:///study.db"
    if not isinstance(value, str) or not value:
        return allowed
    if value in ("default", "memory"):
        return None
    if value.startswith("journal:"):
        problem = check_output_file(value[len("journal:"):])
        return f"journal file: {problem}" if problem else None
    try:
        from sqlalchemy.engine import make_url

        url = make_url(value)
        url.get_dialect()
    except Exception:  # noqa: BLE001 - any parse or driver failure means the URL cannot be used
        return allowed
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        problem = check_output_file(url.database)
        if problem:
            return f"sqlite file {url.database}: {problem}"
    return None


def _values(cfg: Any, key: str) -> list[tuple[str, Any]]:
    """(full key, value) pairs for ``key`` (``a.*``: every child of ``a``); [] if the key is absent."""
    from omegaconf import DictConfig, OmegaConf

    if key.endswith(".*"):
        parent = OmegaConf.select(cfg, key[:-2], default=None)
        if not isinstance(parent, DictConfig):
            return []
        return [(f"{key[:-2]}.{k}", parent[k]) for k in parent]
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent:
        return []
    return [(key, parent[leaf])]


def check_config(cfg: Any, rules: Sequence[Rule]) -> None:
    """Raise ConfigError for the first key of ``cfg`` that breaks its rule."""
    from omegaconf import DictConfig, ListConfig

    for rule in rules:
        for key, value in _values(cfg, rule.key):
            if value is None and rule.optional:
                continue
            if isinstance(value, (DictConfig, ListConfig)):
                problem = "must be a single value, not a list or mapping"
            else:
                problem = rule.check(value)
            if problem:
                raise ConfigError(f"{key}={_show(value)}: {problem}")


POSITIVE = number(gt=0)
FRACTION = number(ge=0, le=1)
RTOL = number(gt=0, lt=1)
COUNT = integer(ge=1)
NATURAL = integer(ge=0)

#: keys of every circuit config group entry (configs/circuit/*.yaml)
CIRCUIT = [
    Rule("circuit.stages", integer(ge=3)),
    Rule("circuit.tstop", POSITIVE),
    Rule("circuit.tstep", POSITIVE),
    Rule("circuit.max_step", POSITIVE),
]

SIMULATE = [
    Rule("params.*", spice_number),
    Rule("netlist", input_file, optional=True),
    Rule("ngspice", boolean),
    Rule("solver.rtol", RTOL),
    Rule("solver.max_steps", COUNT, optional=True),
    *CIRCUIT,
]

_SEARCH = [("prescreen", NATURAL), ("starts", COUNT), ("adam_steps", NATURAL), ("lr", POSITIVE),
           ("lbfgs_steps", NATURAL), ("stop_fraction", POSITIVE), ("patience", COUNT)]

OPTIMIZE = [
    Rule("method", choice("gradient", "optuna", "reference_gradient")),
    Rule("simulator", choice("ngspice", "reference")),
    Rule("surrogate", input_file, optional=True),
    Rule("output", output_file, optional=True),
    Rule("seed", NATURAL),
    Rule("progress", boolean),
    *(Rule(f"gradient.{k}", c) for k, c in _SEARCH),
    Rule("gradient.points", integer(ge=2)),
    Rule("gradient.newton_steps", NATURAL),
    Rule("gradient.corrections", NATURAL),
    Rule("gradient.correct_below", POSITIVE),
    Rule("gradient.check", choice("auto", "ngspice", "reference")),
    *(Rule(f"reference_gradient.{k}", c) for k, c in _SEARCH),
    Rule("optuna.n_trials", COUNT),
    Rule("optuna.startup_trials", NATURAL),
    Rule("optuna.stop_fraction", POSITIVE),
    Rule("optuna.storage", optuna_storage),
    Rule("optuna.study_name", text, optional=True),
    Rule("optuna.n_jobs", COUNT),
    Rule("optuna.verbose", boolean),
    Rule("solver.rtol", RTOL),
    Rule("solver.max_steps", COUNT, optional=True),
    Rule("range.samples", NATURAL),
    Rule("range.bound_tol", number(ge=0, lt=0.5)),
    Rule("range.bound_tol_optuna", number(ge=0, lt=0.5)),
    Rule("verify.reference", boolean),
    Rule("verify.ngspice", boolean),
    # a time or frequency target <= 0 is a question with an answer (out of range, closest achievable)
    Rule("task.target", number(finite=False)),
    Rule("task.tolerance", POSITIVE),
    Rule("task.fixed.*", spice_number),
]

YIELD = [
    Rule("samples", COUNT),
    Rule("verify", NATURAL),
    Rule("points", integer(ge=2)),
    Rule("chunk", COUNT),
    Rule("surrogate", input_file, optional=True),
    Rule("output", output_file, optional=True),
    Rule("seed", NATURAL),
    Rule("progress", boolean),
    Rule("variation.*", number(gt=0, lt=1)),
    Rule("centre.*", spice_number),
    Rule("task.target", number(gt=0)),
    Rule("task.tolerance", POSITIVE),
    Rule("task.fixed.*", spice_number),
]

TRAIN = [
    Rule("seed", NATURAL),
    Rule("recipe", choice("auto", "manual")),
    Rule("netlist", input_file, optional=True),
    Rule("ckpt_path", input_file, optional=True),
    Rule("surrogate.target_nrmse", POSITIVE),
    Rule("surrogate.target_median_nrmse", POSITIVE),
    Rule("surrogate.target_aim", FRACTION),
    Rule("surrogate.budget_min", POSITIVE),
    Rule("surrogate.fixed_params", boolean),
    Rule("surrogate.designs_per_batch", COUNT),
    Rule("surrogate.times_per_design", COUNT),
    Rule("surrogate.batches_per_epoch", COUNT),
    Rule("surrogate.breakpoint_fraction", FRACTION),
    Rule("surrogate.design_margin", number(ge=0, le=1)),
    Rule("surrogate.causal_eps", number(ge=0)),
    Rule("surrogate.lr", number(gt=0, le=1)),
    Rule("surrogate.lbfgs_steps", NATURAL),
    Rule("surrogate.lbfgs_designs", COUNT, optional=True),
    Rule("surrogate.lbfgs_times", COUNT, optional=True),
    Rule("surrogate.lbfgs_adaptive", FRACTION),
    Rule("surrogate.design_pool", NATURAL),
    Rule("surrogate.start_cover", NATURAL),
    Rule("surrogate.retry_factor", number(ge=0)),
    Rule("surrogate.val_designs", COUNT),
    Rule("surrogate.val_points", integer(ge=2)),
    Rule("surrogate.checkpoint_every", COUNT),
    Rule("model.width", COUNT),
    Rule("model.depth", COUNT),
    Rule("model.fourier", NATURAL),
    Rule("model.activation", choice("tanh", "silu", "gelu")),
    Rule("model.corner_features", boolean),
    Rule("model.dtype", choice("float32", "float64")),
    Rule("model.windows", COUNT),
    Rule("model.state_input", boolean),
    Rule("model.row_scale", choice("jacobian", "terms", "mixed")),
    Rule("model.periodic_harmonics", NATURAL),
    Rule("model.periodic_settle", number(ge=0)),
    Rule("model.frequency_degree", NATURAL),
    Rule("trainer.max_steps", COUNT),
    Rule("trainer.check_val_every_n_epoch", COUNT),
    Rule("trainer.log_every_n_steps", COUNT),
    Rule("trainer.enable_progress_bar", boolean),
    Rule("trainer.accelerator", choice("cpu", "gpu", "cuda", "mps", "auto")),
    *CIRCUIT,
]
