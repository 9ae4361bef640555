"""Entry-point helpers shared by the scripts: one-line user errors, run functions behind @hydra.main."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

from circuits.errors import NeuroSpiceError

#: the scripts' Hydra config folder
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

__all__ = ["validate", "check_choices", "CONFIG_DIR", "user_errors", "run_simulate", "exit_code_for_hydra", "run_name", "user_error_message"]


def run_name(netlist: str | None, circuit: str) -> str:
    """Name of a run's folder: the netlist file's stem (`netlist=PATH`), else the circuit's name."""
    return Path(str(netlist)).stem if netlist else str(circuit)


def _register_resolvers() -> None:
    """`${run_name:${netlist},${circuit.name}}` in the scripts' Hydra run directories."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_name", run_name, replace=True)


_register_resolvers()


def user_errors(fn: Callable) -> Callable:
    """Turn a user error (see `user_error_message`) into one line on stderr and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a bug (no message) is re-raised with its traceback
            message = None if os.environ.get("NEUROSPICE_TRACEBACK") == "1" else user_error_message(exc)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
    return wrapper


def exit_code_for_hydra(main: Callable[[], Any], free_groups: tuple[str, ...] = ("params.",)) -> None:
    """Run a @hydra.main function behind the scripts' one error boundary.

    Overrides under ``free_groups`` (``params.cload=12e-15``) may name keys the config does not
    list, so they are passed to Hydra as add-or-override (``++params.cload=...``). A user error
    (bad override, unknown config option, netlist, file, ngspice, convergence) is one line
    ``error: ...`` on stderr and exit 2; any other exception is a bug and keeps its traceback.
    """
    sys.argv[1:] = [f"++{a}" if a.startswith(free_groups) else a for a in sys.argv[1:]]
    wants_full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if wants_full:  # the user asked for tracebacks: `user_errors` inside the job keeps them too
        os.environ["NEUROSPICE_TRACEBACK"] = "1"
    # Hydra prints its own multi-line report unless HYDRA_FULL_ERROR is set; with it set the
    # exception reaches this boundary, which decides between one line and a traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except SystemExit as exc:
        sys.exit(2 if exc.code == 1 else exc.code)
    except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs below
        message = None if wants_full else user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def check_choices(config_dir: str | Path) -> None:
    """ConfigError for a config-group choice with no file, ``optional`` groups included.

    Hydra skips an ``optional`` group's unknown option (``experiment=nosuch``) without a word."""
    from hydra.core.hydra_config import HydraConfig

    from circuits.errors import ConfigError

    for group, option in HydraConfig.get().runtime.choices.items():
        if option is None or group.startswith("hydra") or "/" in group:
            continue
        folder = Path(config_dir) / group
        if folder.is_dir() and not (folder / f"{option}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            raise ConfigError(f"unknown {group} option '{option}' (choices: {known})")


def validate(cfg, schema) -> None:
    """Every check a script runs before its work: config-group choices, then the key schema."""
    from circuits.config_check import check_config

    check_choices(CONFIG_DIR)
    check_config(cfg, schema)


def user_error_message(exc: BaseException) -> str | None:
    """One line for an error the user can fix (config, override, file), or None for a bug."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ValidationError

    if isinstance(exc, NeuroSpiceError):
        return _one_line(str(exc))
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, name = str(exc.missing_cfg_file).rpartition("/")
        return f"unknown {group or 'config'} option '{name}' (choices: {', '.join(sorted(exc.options))})"
    if isinstance(exc, (ConfigCompositionException, OverrideParseException, ValidationError)):
        cause = exc.__cause__
        text = str(exc) if cause is None else f"{exc}: {_first_line(str(cause))}"
        return _one_line(text.replace("\n\n", "\n"))
    if isinstance(exc, (ValueError, TypeError, KeyError)) and _raised_in_hydra(exc):
        return _one_line(f"bad override: {exc}")  # e.g. `circuit=0`: Hydra's own check of a group value
    if isinstance(exc, OSError) and (exc.filename or exc.strerror):
        return f"{exc.filename}: {exc.strerror or exc}" if exc.filename else _one_line(str(exc))
    return None


def _raised_in_hydra(exc: BaseException) -> bool:
    """True if the innermost frame of the exception is Hydra's code (composition, not ours)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}hydra{os.sep}" in tb.tb_frame.f_code.co_filename


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _one_line(text: str) -> str:
    """Join a multi-line message (Hydra's, OmegaConf's) into one line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "".join(ln + ("" if i == len(lines) - 1 else " " if ln.endswith((".", ":")) else "; ")
                   for i, ln in enumerate(lines))


def run_simulate(cfg, outdir: str | Path) -> dict[str, Any]:
    """Simulate one design with the reference solver and ngspice; write parquet, json and png."""
    from omegaconf import OmegaConf

    from circuits import io
    from circuits.circuit import circuit_from_config, load_circuit
    from circuits.compare import plot_overlay, reference_vs_ngspice

    outdir = Path(outdir)
    if cfg.get("netlist"):
        circuit = load_circuit(Path(cfg.netlist).expanduser())
    else:
        circuit = circuit_from_config(OmegaConf.to_container(cfg.circuit, resolve=True),
                                      source=f"circuit={cfg.circuit.name}")
    from circuits.config_check import spice_float

    params = {str(k): spice_float(v) for k, v in (cfg.get("params") or {}).items()}
    table, metrics = reference_vs_ngspice(circuit, params, rtol=float(cfg.solver.rtol),
                                          use_ngspice=bool(cfg.ngspice))
    io.write_parquet(outdir / "waveforms.parquet", table)
    io.write_json(outdir / "metrics.json", metrics)
    fig = plot_overlay(table, circuit.outputs, f"{circuit.name}: reference vs ngspice")
    io.save_figure(outdir / "waveforms.png", fig)
    return metrics
