"""Entry-point helpers shared by the scripts: one-line user errors, run functions behind @hydra.main."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

from circuits.errors import NeuroSpiceError

__all__ = ["user_errors", "run_simulate", "exit_code_for_hydra", "run_name"]


def run_name(netlist: str | None, circuit: str) -> str:
    """Name of a run's folder: the netlist file's stem (`netlist=PATH`), else the circuit's name."""
    return Path(str(netlist)).stem if netlist else str(circuit)


def _register_resolvers() -> None:
    """`${run_name:${netlist},${circuit.name}}` in the scripts' Hydra run directories."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("run_name", run_name, replace=True)


_register_resolvers()


def user_errors(fn: Callable) -> Callable:
    """Turn a NeuroSpiceError into one line on stderr and exit status 2 (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NeuroSpiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    return wrapper


def exit_code_for_hydra(main: Callable[[], Any], free_groups: tuple[str, ...] = ("params.",)) -> None:
    """Run a @hydra.main function; Hydra's own composition errors (exit 1) become exit 2.

    Overrides under ``free_groups`` (``params.cload=12e-15``) may name keys the config does not
    list, so they are passed to Hydra as add-or-override (``++params.cload=...``).
    """
    sys.argv[1:] = [f"++{a}" if a.startswith(free_groups) else a for a in sys.argv[1:]]
    try:
        main()
    except SystemExit as exc:
        sys.exit(2 if exc.code == 1 else exc.code)


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
    params = {str(k): float(v) for k, v in (cfg.get("params") or {}).items()}
    table, metrics = reference_vs_ngspice(circuit, params, rtol=float(cfg.solver.rtol),
                                          use_ngspice=bool(cfg.ngspice))
    io.write_parquet(outdir / "waveforms.parquet", table)
    io.write_json(outdir / "metrics.json", metrics)
    fig = plot_overlay(table, circuit.outputs, f"{circuit.name}: reference vs ngspice")
    io.save_figure(outdir / "waveforms.png", fig)
    return metrics
