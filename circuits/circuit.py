"""`Circuit`: one netlist plus its design space, outputs and time window; loaded from configs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from circuits.errors import ConfigError
from circuits.netlist import Netlist, parse_file, parse_netlist, read_netlist_text
from circuits.params import ParamSpace

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "circuit"

__all__ = ["Circuit", "load_circuit", "circuit_from_config", "ngspice_max_step", "CONFIG_DIR"]


def ngspice_max_step(tstep: float, tstop: float, tstart: float = 0.0, tmax: float | None = None) -> float:
    """ngspice's transient step ceiling (traninit.c): tmax if given, else min(tstep, (tstop - tstart)/50)."""
    if tmax:
        return float(tmax)
    return min(float(tstep), (float(tstop) - float(tstart)) / 50)


@dataclass
class Circuit:
    """A netlist with the design space, the outputs of interest and the transient window."""

    name: str
    netlist: Netlist
    space: ParamSpace
    outputs: list[str]
    tstop: float
    tstep: float
    uic: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    tstart: float = 0.0
    max_step: float | None = None  # the solver's step ceiling; None: ngspice's rule (`ngspice_max_step`)

    def __post_init__(self) -> None:
        if self.max_step is None:
            self.max_step = ngspice_max_step(self.tstep, self.tstop, self.tstart)
        unknown = [n for n in self.space.names if n not in self.netlist.params]
        if unknown:
            raise ConfigError(f"circuit '{self.name}': design parameter(s) {unknown} are not .param "
                              f"names of the netlist (known: {list(self.netlist.params)})")
        self._check_not_fixed(self.space.names)

    def _check_not_fixed(self, names) -> None:
        """Parameters that chose a .if branch or size a URC line's lumps keep their netlist values (the
        netlist's structure is built once)."""
        fixed = sorted(set(names) & self.netlist.fixed_params)
        if fixed:
            raise ConfigError(f"circuit '{self.name}': parameter '{fixed[0]}' decides a .if branch or a URC "
                              "line's lumps in the netlist, so it keeps its netlist value (edit the .param line "
                              "instead)")

    def overrides(self, params: Mapping[str, float] | None) -> dict[str, float]:
        """Nominal design merged with user values; checks names and ranges."""
        params = {str(k).lower(): float(v) for k, v in (params or {}).items()}
        unknown = [k for k in params if k not in self.netlist.params]
        if unknown:
            raise ConfigError(f"circuit '{self.name}': unknown parameter(s) {unknown}; "
                              f"design parameters are {self.space.names}")
        self._check_not_fixed(params)
        self.space.check(params, where=f"circuit '{self.name}': ")
        return {**self.space.nominal(), **params}

    def param_values(self, params: Mapping[str, float] | None = None) -> dict[str, float]:
        """Every netlist parameter resolved to a float for one design."""
        values = self.netlist.resolve_params(self.overrides(params))
        return {k: float(v) for k, v in values.items()}

    def design_matrix(self, designs: Tensor | list[Mapping[str, float]] | Mapping[str, float] | None
                      ) -> Tensor:
        """Normalise designs to a (B, P) float64 tensor ordered like `space.names`."""
        if designs is None:
            return self.space.nominal_vector().unsqueeze(0)
        if isinstance(designs, Tensor):
            return designs.unsqueeze(0) if designs.dim() == 1 else designs
        if isinstance(designs, Mapping):
            designs = [designs]
        rows = []
        for d in designs:
            extra = [k for k in d if str(k).lower() not in self.space.names]
            if extra:
                raise ConfigError(f"circuit '{self.name}': {extra} are not design parameters "
                                  f"({self.space.names})")
            self.space.check({str(k).lower(): v for k, v in d.items()}, where=f"circuit '{self.name}': ")
            rows.append(self.space.vector({str(k).lower(): v for k, v in d.items()}))
        return torch.stack(rows)


def ring_netlist(stages: int, vdd: float = 1.8) -> str:
    """An N-stage CMOS ring oscillator netlist with ring5's devices and kick pattern."""
    if stages < 3 or stages % 2 == 0:
        raise ConfigError(f"ring: stages must be an odd number >= 3, got {stages}")
    nodes = [f"n{k}" for k in range(1, stages + 1)]
    lines = [f"{stages}-stage CMOS ring oscillator", ".param cload=10f wn=1u wp=2u",
             ".model nch nmos level=1 vto=0.5 kp=200u lambda=0.05",
             ".model pch pmos level=1 vto=-0.5 kp=100u lambda=0.05",
             ".subckt inv in out vdd", "MP out in vdd vdd pch w={wp} l=1u",
             "MN out in 0 0 nch w={wn} l=1u", "CL out 0 {cload}", ".ends inv", f"VDD vdd 0 {vdd}"]
    for k in range(stages):
        lines.append(f"X{k + 1} {nodes[k - 1]} {nodes[k]} vdd inv")
    ics = [f"v({n})={0 if k % 2 == 0 else vdd}" for k, n in enumerate(nodes[:-1])]
    ics.append(f"v({nodes[-1]})={vdd / 2}")
    # the window grows with the period (about 0.2 ns per stage at nominal): ring5's 4 ns holds about
    # four periods, and so does every N's, so a limit cycle shows within it
    lines += [".ic " + " ".join(ics), f".tran 1p {0.8 * stages:g}n uic", ".end"]
    return "\n".join(lines) + "\n"


GENERATORS = {"ring": ring_netlist}


def circuit_from_config(cfg: Mapping[str, Any], source: str = "<config>") -> Circuit:
    """Build a Circuit from a config mapping (a Hydra `circuit` node or a loaded YAML)."""
    cfg = dict(cfg)
    name = str(cfg.get("name", "circuit"))
    if "generator" in cfg:
        gen = GENERATORS.get(str(cfg["generator"]))
        if gen is None:
            raise ConfigError(f"{source}: unknown generator {cfg['generator']!r} (known: {list(GENERATORS)})")
        text = gen(int(cfg.get("stages", 5)))
        if "outputs" not in cfg or not cfg["outputs"]:
            cfg["outputs"] = [f"v(n{k})" for k in range(1, int(cfg.get("stages", 5)) + 1)]
        netlist = parse_netlist(text, file=f"{source}[generated]")
    elif "netlist" in cfg:
        netlist = parse_netlist(str(cfg["netlist"]), file=f"{source}[netlist]")
    elif "netlist_file" in cfg:
        netlist = parse_file(Path(source).parent / str(cfg["netlist_file"]))
    else:
        raise ConfigError(f"{source}: a circuit config needs 'netlist', 'netlist_file' or 'generator'")
    space = ParamSpace.from_config(cfg.get("params"))
    tran = netlist.tran
    tstop = float(cfg.get("tstop") or (tran.tstop if tran else 0.0))
    tstep = float(cfg.get("tstep") or (tran.tstep if tran else tstop / 1000))
    if tstop <= 0:
        raise ConfigError(f"{source}: no time window: give .tran in the netlist or tstop in the config")
    outputs = [str(o).lower() for o in (cfg.get("outputs") or [])]
    if not outputs:
        outputs = [f"v({n})" for n in netlist.nodes()]
    tstart = tran.tstart if tran and tran.tstart < tstop else 0.0
    # A config's circuit is checked against ngspice (scripts/validate_reference.py) with its step set
    # by error control alone, ceiling (tstop - tstart)/50: ngspice's tstep ceiling would cost the
    # shipped circuits 2-40x the steps for no measured accuracy gain.  `max_step` (or a .tran tmax)
    # sets the ceiling explicitly.
    max_step = cfg.get("max_step") or (tran.tmax if tran and tran.tmax else (tstop - tstart) / 50)
    return Circuit(name=name, netlist=netlist, space=space, outputs=outputs, tstop=tstop, tstep=tstep,
                   uic=bool(tran.uic) if tran else False, config=cfg, tstart=tstart,
                   max_step=float(max_step))


def load_circuit(name_or_path: str | Path, **overrides: Any) -> Circuit:
    """Load a circuit by config name (``ring5``), a ``.yaml`` config, or a raw ``.cir`` netlist."""
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{path}: no such circuit config")
        return circuit_from_config({**_read_yaml(path), **overrides}, source=str(path))
    if path.suffix:  # a raw netlist
        netlist = parse_file(path)
        cfg = {"name": path.stem, "netlist": None, **overrides}
        tran = netlist.tran
        if tran is None and "tstop" not in overrides:
            raise ConfigError(f"{path}: the netlist has no .tran card")
        tstop = float(overrides.get("tstop") or tran.tstop)
        tstep = float(overrides.get("tstep") or (tran.tstep if tran else tstop / 1000))
        tstart = tran.tstart if tran and tran.tstart < tstop else 0.0
        # a raw netlist runs exactly as ngspice runs it, step ceiling included
        max_step = overrides.get("max_step") or ngspice_max_step(tstep, tstop, tstart, tran and tran.tmax)
        return Circuit(name=path.stem, netlist=netlist, space=ParamSpace([]),
                       outputs=[str(o).lower() for o in overrides.get("outputs") or
                                [f"v({n})" for n in netlist.nodes()]],
                       tstop=tstop, tstep=tstep, uic=bool(tran.uic) if tran else False, config=cfg,
                       tstart=tstart, max_step=float(max_step))
    cfg_path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not cfg_path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown circuit '{name_or_path}' (known: {', '.join(known)})")
    return circuit_from_config({**_read_yaml(cfg_path), **overrides}, source=str(cfg_path))


def _bound(value: Any, name: str, where: str) -> float:
    """A bound of `space.NAME=[LOW,HIGH]`: a number or a SPICE number string (``2k``, ``-10p``)."""
    from circuits.expr import parse_number

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number: float | None = float(value)
    else:
        text = str(value).strip()
        magnitude = parse_number(text.lstrip("+-"))
        number = None if magnitude is None else (-magnitude if text.startswith("-") else magnitude)
    if number is None or not math.isfinite(number):
        raise ConfigError(f"{where}space.{name}: bound {value!r} is not a number")
    return number


def netlist_config(path: str | Path, space: Mapping[str, Any] | None = None,
                   outputs: list[str] | None = None) -> dict[str, Any]:
    """A circuit config for a raw netlist file with a design space over its `.param`s.

    space: ``{name: [low, high]}`` or ``[low, high, "log"]`` (numbers or SPICE numbers); the nominal
    is the netlist's own value when it lies in the range, else the range's (geometric) midpoint.
    Outputs default to every node voltage; a bare node name ``out`` means ``v(out)`` (Hydra's
    override grammar reads an unquoted ``v(out)`` as a function call).  The netlist text is embedded (so a trained surrogate
    file does not depend on the file), unless it includes other files."""
    path = Path(path).expanduser()
    where = f"{path}: "
    netlist = parse_file(path)  # one-line NetlistError for a missing or broken file
    values = netlist.resolve_params()
    params: dict[str, dict[str, Any]] = {}
    for name, spec in (space or {}).items():
        key = str(name).lower()
        if key not in netlist.params:
            raise ConfigError(f"{where}space.{name}: not a .param of the netlist "
                              f"(its .params: {', '.join(netlist.params) or 'none'})")
        if not isinstance(spec, (list, tuple)) or len(spec) not in (2, 3) or (
                len(spec) == 3 and str(spec[2]).lower() != "log"):
            raise ConfigError(f"{where}space.{name}: expected [LOW,HIGH] or [LOW,HIGH,log], got {spec!r}")
        low, high = _bound(spec[0], name, where), _bound(spec[1], name, where)
        log = len(spec) == 3
        if low >= high:
            raise ConfigError(f"{where}space.{name}: LOW {low:g} must be < HIGH {high:g}")
        if log and low <= 0:
            raise ConfigError(f"{where}space.{name}: a log range needs LOW > 0, got [{low:g}, {high:g}]")
        own = values.get(key)
        nominal = float(own) if isinstance(own, (int, float)) and low <= float(own) <= high else (
            math.sqrt(low * high) if log else 0.5 * (low + high))
        params[key] = {"low": low, "high": high, "log": log, "nominal": nominal}
    nodes = set(netlist.nodes())
    outputs = [f"v({o})" if str(o).lower() in nodes else str(o).lower() for o in (outputs or [])]
    text = read_netlist_text(path)
    source = {"netlist_file": str(path.resolve())} if ".inc" in text.lower() or ".lib" in text.lower() else {
        "netlist": text}
    return {"name": path.stem, **source, "params": params, "outputs": outputs}


def _read_yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]
    except Exception as exc:  # omegaconf raises many types for malformed YAML
        raise ConfigError(f"{path}: cannot read config: {str(exc).splitlines()[0]}") from None
