"""Bridge to ngspice: write a flat numeric deck for one design, run ``ngspice -b``, read the results.

ngspice is the external reference that our own solver is checked against, so the deck asks it for a
*converged* answer rather than a fast one:

* ``.options reltol=1e-7 abstol=1e-15 vntol=1e-9 chgtol=1e-18 trtol=1 method=trap`` and
  ``.tran tstep tstop 0 tmax`` with ``tmax = tstep`` by default (preset ``"accurate"``).
  Measured (tests/test_ngspice_bridge.py and a 5-stage level-1 CMOS ring oscillator, 5 ns, tstep
  10 ps, NRMSE against a reference converged to 1e-7):

  ======================================  =================  ==================  ========
  options                                 ring v(n) NRMSE    ring i(vdd) NRMSE   wall
  ======================================  =================  ==================  ========
  gear2, reltol 1e-6, trtol 7 (tmax any)  3.1e-3             7.9e-3              0.30 s
  trap,  reltol 1e-6, trtol 7             1.5e-3             3.8e-3              0.25 s
  gear2, reltol 1e-7, trtol 1             1.8e-4             4.7e-4              1.2 s
  trap,  reltol 1e-7, trtol 1 (default)   8.8e-5             2.3e-4              0.57 s
  trap,  reltol 1e-8, trtol 1             1.9e-5             4.8e-5              1.2 s
  ======================================  =================  ==================  ========

  In nonlinear circuits the local-truncation-error control (reltol and trtol, ngspice's default
  trtol=7 loosens it sevenfold) sets the accuracy; ``tmax`` below tstep changed nothing there.  On
  an RC low-pass driven by a PULSE with 1-2 ns edges (tau = 1 us, tstep = 10 ns) the default gives
  a maximum error of ~3e-6 of the swing against the exact solution (gear2: ~1e-5; ngspice's own
  defaults: ~7e-6); there the error sits at the source edges and a smaller ``tmax`` reduces it
  (tmax = tstep/10: ~3e-7).
  Trapezoidal beats gear2 at equal cost in every case measured; ``options={"method": "gear",
  "maxord": 2}`` switches if a stiff circuit ever rings.  ``options="ngspice"`` gives ngspice's
  own defaults, for speed comparisons against what users get out of the box.
* Results are written with ``set filetype=binary`` (exact doubles) at ngspice's own time points
  (breakpoints of PULSE/PWL sources are hit exactly); pass ``times=`` to resample linearly.

Sign convention: ``i(name)`` is the current flowing *into the element's first terminal* (through the
element towards the second).  For a voltage source that is ngspice's own convention (current into
the ``+`` terminal through the source), so a supply delivering power has a negative ``i(vdd)``.  For
elements ngspice has no branch current for (R, C, G, I, D, M, Python devices, B current sources) a
0 V sense source is inserted in series with the first terminal, which gives the same convention
(``i(m1)`` is the drain current, ``i(r1)`` flows from node 1 to node 2).

Names: node names keep their hierarchical dots (ngspice 39 accepts ``x1.mid``); anything outside
``[a-z0-9_.]`` becomes ``_``.  Hierarchical elements are written as ``<letter>.<name>``
(``m.x1.mp``), ngspice's own flattening convention, so the first letter still selects the device.
Python devices (element letter ``n``) are given a name with only ``[a-z0-9_]`` (``x1.n1`` ->
``x1_n1``); their state ``s`` lives on node ``f"{name}_{s}"`` and is reported as ``x1.n1.s``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuits import waveforms
from circuits.errors import ConfigError, NgspiceError

__all__ = [
    "DEFAULT_OPTIONS",
    "OPTION_PRESETS",
    "INSTALL_HINT",
    "Deck",
    "NgspiceError",
    "build_deck",
    "netlist_to_ngspice",
    "netlist_run",
    "run_deck",
    "run_ngspice",
    "run_ngspice_batch",
    "ngspice_available",
    "ngspice_version",
    "ngspice_executable",
    "read_raw",
    "circuit_deck",
    "batch_wall_times",
]

#: ``.options`` presets; `netlist_to_ngspice(options=...)` takes a preset name or a dict that updates
#: ``"accurate"`` (a value of None drops an entry).  ``"accurate"`` is the default: see the module
#: docstring for the measurements behind it.  ``"ngspice"`` is ngspice's own defaults (reltol=1e-3,
#: trtol=7, trapezoidal): what a user gets out of the box, for fair speed comparisons.
OPTION_PRESETS: dict[str, dict[str, Any]] = {
    "accurate": {
        "reltol": 1e-7,
        "abstol": 1e-15,
        "vntol": 1e-9,
        "chgtol": 1e-18,
        "trtol": 1,
        "method": "trap",
    },
    "ngspice": {},
}
DEFAULT_OPTIONS: dict[str, Any] = OPTION_PRESETS["accurate"]

INSTALL_HINT = ("ngspice not found on PATH: install it with `apt-get install -y ngspice` "
                "(macOS: `brew install ngspice`, conda: `conda install -c conda-forge ngspice`) "
                "or set NGSPICE=/path/to/ngspice")

RAW_NAME = "out.raw"
DECK_NAME = "deck.cir"

# Element letters for which ngspice keeps a branch current `i(name)`.
_BRANCH_KINDS = {"v", "e", "l", "h"}


# --------------------------------------------------------------------------------------------------
# executable

def ngspice_executable() -> str:
    """Path of the ngspice binary ($NGSPICE, else PATH); raises `NgspiceError` with an install hint."""
    env = os.environ.get("NGSPICE")
    if env:
        found = shutil.which(env)
        if found:
            return found
        raise NgspiceError(f"NGSPICE={env} is not an executable; {INSTALL_HINT}")
    found = shutil.which("ngspice")
    if not found:
        raise NgspiceError(INSTALL_HINT)
    return found


def ngspice_available() -> bool:
    """True if an ngspice binary can be found."""
    try:
        ngspice_executable()
    except NgspiceError:
        return False
    return True


def ngspice_version() -> str:
    """ngspice's version string, e.g. ``"39"``; raises `NgspiceError` if it is missing."""
    exe = ngspice_executable()
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NgspiceError(f"cannot run {exe} --version: {exc}") from None
    m = re.search(r"ngspice-([\w.+-]+)", proc.stdout + proc.stderr)
    if not m:
        raise NgspiceError(f"cannot read the version from `{exe} --version`")
    return m.group(1)


# --------------------------------------------------------------------------------------------------
# numbers and names

def _fmt(x: float) -> str:
    """A float written so that ngspice reads back the same double."""
    x = float(x)
    if not math.isfinite(x):
        raise ConfigError(f"non-finite value {x!r} cannot be written to an ngspice deck")
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _value(expr: Any, env: Mapping[str, float]) -> float:
    """Evaluate an `Expr` (or plain number) to a float under the resolved parameter values."""
    if isinstance(expr, (int, float)):
        return float(expr)
    v = expr.evaluate(env)
    if hasattr(v, "item"):
        v = v.item()
    return float(v)


_BAD_NODE = re.compile(r"[^a-z0-9_.]")
_BAD_WORD = re.compile(r"[^a-z0-9_]")


class _Names:
    """Netlist <-> ngspice name mapping with collision checks."""

    def __init__(self) -> None:
        self.node: dict[str, str] = {"0": "0"}
        self.elem: dict[str, str] = {}
        self._used_nodes: set[str] = {"0"}
        self._used_elems: set[str] = set()

    def map_node(self, node: str) -> str:
        if node in self.node:
            return self.node[node]
        base = _BAD_NODE.sub("_", node.lower()) or "n"
        name, k = base, 1
        while name in self._used_nodes:
            name = f"{base}_{k}"
            k += 1
        self.node[node] = name
        self._used_nodes.add(name)
        return name

    def reserve_node(self, name: str) -> str:
        """Claim a node name created for ngspice only (sense nodes, Python-device states)."""
        if name in self._used_nodes:
            raise NgspiceError(f"ngspice node name {name!r} is used twice; rename a node")
        self._used_nodes.add(name)
        return name

    def fresh_elem(self, base: str) -> str:
        """A new ngspice element name for a generated element (sense sources)."""
        out, k = base, 1
        while out in self._used_elems:
            out = f"{base}_{k}"
            k += 1
        self._used_elems.add(out)
        return out

    def map_elem(self, kind: str, name: str) -> str:
        if name in self.elem:
            return self.elem[name]
        clean = _BAD_NODE.sub("_", name.lower())
        base = clean if (clean.startswith(kind) and "." not in clean) else f"{kind}.{clean}"
        out, k = base, 1
        while out in self._used_elems:
            out = f"{base}_{k}"
            k += 1
        self.elem[name] = out
        self._used_elems.add(out)
        return out


# --------------------------------------------------------------------------------------------------
# deck

@dataclass
class Deck:
    """An ngspice deck plus what is needed to map its vectors back to requested output names."""

    text: str
    outputs: list[str]                 # requested names, in column order
    vectors: list[str]                 # ngspice vector expressions, same order
    tstop: float
    signs: list[float] = field(default_factory=list)   # column = sign * vector (v(0,a) = -v(a))
    node_map: dict[str, str] = field(default_factory=dict)
    element_map: dict[str, str] = field(default_factory=dict)


def _source_spec(el, env) -> str:
    wf = el.waveform
    if wf is None:
        if el.value is not None:
            return f"dc {_fmt(_value(el.value, env))}"
        raise ConfigError(f"{el.name}: source without a value")
    parts: list[str] = []
    kind = wf.kind.lower()
    if kind == "dc":
        v = wf.args[0] if wf.args else wf.dc
        return f"dc {_fmt(_value(v, env) if v is not None else 0.0)}"
    if wf.dc is not None:
        parts.append(f"dc {_fmt(_value(wf.dc, env))}")
    if kind not in waveforms.ARITY:
        raise ConfigError(f"{el.name}: waveform {wf.kind!r} has no ngspice equivalent here")
    args = " ".join(_fmt(_value(a, env)) for a in wf.args)
    parts.append(f"{kind}({args})")
    return " ".join(parts)


def _param_text(params: Mapping[str, Any], env) -> str:
    return " ".join(f"{k}={_fmt(_value(v, env))}" for k, v in params.items())


def _instance_text(el, netlist, env) -> str:
    """``model k=v ...`` of a built-in device's instance; the device's flags (a switch's ``on``)
    as bare words when set."""
    from circuits.devices.base import device_for_model_type

    dev = device_for_model_type(netlist.models[el.model].type)
    return " ".join([el.model, *_flagged_text(el.params, getattr(dev, "flags", ()), {}, env)])


def _flagged_text(params: Mapping[str, Any], flags: Sequence[str], names: Mapping[str, str], env) -> list[str]:
    """The flags that are set as bare words, then ``k=v`` of the other parameters (under ngspice's
    `names` for them), as a list of words ([] when there are none)."""
    words = [k for k in flags if k in params and _value(params[k], env)]
    extra = _param_text({names.get(k, k): v for k, v in params.items() if k not in flags}, env)
    return words + ([extra] if extra else [])


def _model_card(name: str, model, env) -> str:
    """``.model name type [flags] k=v ...``: the device's model flags (VDMOS's ``pchan``) as bare words,
    the parameters under ngspice's names for the type (VDMOS's grading coefficient ``m``)."""
    from circuits.devices.base import device_for_model_type

    dev = device_for_model_type(model.type)
    words = _flagged_text(model.params, getattr(dev, "model_flags", ()), getattr(dev, "ngspice_names", {}), env)
    return " ".join([".model", name, model.type, *words])


def _parse_output(out: str) -> tuple[str, list[str]]:
    """'v(a)' -> ('v', ['a']); 'v(a,b)'; 'i(vdd)' -> ('i', ['vdd']); 'n1.p' -> ('state', ['n1.p'])."""
    s = out.strip().lower()
    m = re.fullmatch(r"([vi])\s*\(\s*([^,()\s]+)\s*(?:,\s*([^,()\s]+)\s*)?\)", s)
    if m:
        args = [m.group(2)] + ([m.group(3)] if m.group(3) else [])
        if m.group(1) == "i" and len(args) != 1:
            raise ConfigError(f"output {out!r}: i() takes one element name")
        return m.group(1), args
    if "." in s and "(" not in s:
        return "state", [s]
    raise ConfigError(f"output {out!r}: expected v(node), v(node1,node2), i(element) or "
                      f"<device>.<state>")


def build_deck(netlist, values: Mapping[str, float], *, tstep: float, tstop: float, uic: bool,
               outputs: Sequence[str], tmax: float | None = None,
               options: Mapping[str, Any] | str | None = None, raw_name: str = RAW_NAME,
               title: str | None = None, tstart: float = 0.0) -> Deck:
    """Build the deck and its output mapping (see `netlist_to_ngspice`)."""
    from circuits.devices.base import device_for_model_type

    env = dict(values)
    names = _Names()
    # Nodes first so that user nodes win any collision with generated ones.
    for n in netlist.nodes():
        names.map_node(n)
    for n in netlist.ic:
        names.map_node(n)
    elements = {e.name: e for e in netlist.elements}
    for el in netlist.elements:
        if el.kind != "n":
            names.map_elem(el.kind, el.name)

    # Resolve outputs; remember which elements need a series sense source.
    vectors: list[str] = []
    signs: list[float] = []
    sense: dict[str, str] = {}          # element name -> sense source ngspice name
    state_outputs: list[tuple[int, str, str]] = []  # (column, element, state)
    for out in outputs:
        kind, args = _parse_output(out)
        signs.append(1.0)
        if kind == "v":
            for a in args:
                if a not in names.node:
                    raise ConfigError(f"output {out!r}: unknown node {a!r}")
            # ngspice's `write` rejects v(a,0); and `-v(a)` would merge with the previous vector
            if len(args) == 2 and args[1] == "0":
                args = args[:1]
            elif len(args) == 2 and args[0] == "0":
                args, signs[-1] = args[1:], -1.0
            if args == ["0"]:
                raise ConfigError(f"output {out!r}: the ground voltage is not an output")
            vectors.append("v(" + ",".join(names.node[a] for a in args) + ")")
        elif kind == "i":
            el = elements.get(args[0])
            if el is None:
                raise ConfigError(f"output {out!r}: unknown element {args[0]!r}")
            branch = el.kind in _BRANCH_KINDS or (el.kind == "b" and el.behavior
                                                  and el.behavior[0] == "v")
            if branch:
                vectors.append(f"i({names.elem[el.name]})")
            else:
                if el.name not in sense:
                    sense[el.name] = names.fresh_elem("vsense_" + _BAD_WORD.sub("_", el.name))
                vectors.append(f"i({sense[el.name]})")
        else:
            inst, _, state = args[0].rpartition(".")
            el = elements.get(inst)
            if el is None or el.kind != "n":
                raise ConfigError(f"output {out!r}: {inst!r} is not a Python-device instance")
            dev = device_for_model_type(netlist.models[el.model].type)
            if dev is None or state not in dev.states:
                raise ConfigError(f"output {out!r}: device {inst!r} has no state {state!r}")
            state_outputs.append((len(vectors), inst, state))
            vectors.append("")          # filled in once the device's name is known

    body: list[str] = []
    dot_lines: list[str] = []
    ic_lines: list[str] = []
    for el in netlist.elements:
        nodes = [names.node[n] for n in el.nodes]
        if el.name in sense:
            sn = names.reserve_node(f"{nodes[0]}_isense_{_BAD_WORD.sub('_', el.name)}")
            body.append(f"{sense[el.name]} {nodes[0]} {sn} dc 0")
            nodes = [sn] + nodes[1:]
        k = el.kind
        if k == "n":
            model = netlist.models.get(el.model)
            if model is None:
                raise ConfigError(f"{el.name}: unknown model {el.model!r}")
            dev = device_for_model_type(model.type)
            if dev is None:
                raise ConfigError(f"{el.name}: no device implements model type {model.type!r}")
            mvals = {k2: float(v) for k2, v in dev.model_params.items()}
            mvals.update({k2: _value(v, env) for k2, v in model.params.items()})
            ivals = {k2: float(v) for k2, v in dev.instance_params.items()}
            ivals.update({k2: _value(v, env) for k2, v in el.params.items()})
            dname = _BAD_WORD.sub("_", el.name.lower())
            for s in dev.states:
                names.reserve_node(f"{dname}_{s}")
            names.elem[el.name] = dname
            for line in dev.ngspice_lines(dname, nodes, mvals, ivals):
                line = line.strip()
                if not line:
                    continue
                if line.startswith("."):
                    (ic_lines if line.lower().startswith(".ic") else dot_lines).append(line)
                else:
                    body.append(line)
            continue
        ename = names.elem[el.name]
        head = f"{ename} {' '.join(nodes)}"
        if getattr(el, "controls", None):  # K, F, H, W: nodes, the elements whose currents they read,
            refs = " ".join(names.elem[c] for c in el.controls)  # then the value or the model
            value = _instance_text(el, netlist, env) if el.model else _fmt(_value(el.value, env))
            body.append(f"{ename} {' '.join(nodes + [refs])} {value}".replace("  ", " "))
        elif k in ("r", "c", "l"):
            value = [] if el.value is None else [_fmt(_value(el.value, env))]
            words = [*value, _instance_text(el, netlist, env)] if el.model else [*value, _param_text(el.params, env)]
            body.append(" ".join([head, *words]).rstrip())
        elif k in ("e", "g"):
            body.append(f"{head} {_fmt(_value(el.value, env))}")
        elif k in ("v", "i"):
            body.append(f"{head} {_source_spec(el, env)}")
        elif k == "b":
            if not el.behavior:
                raise ConfigError(f"{el.name}: B source without i= or v=")
            which, expr = el.behavior
            text = expr.to_text(params=env, node_name=lambda n: names.node[n.lower()]
                                if n.lower() in names.node else names.map_node(n.lower()))
            body.append(f"{head} {which}={text}")
        elif el.model is not None:  # a built-in ngspice device: nodes, model, instance parameters
            body.append(f"{head} {_instance_text(el, netlist, env)}")
        else:
            raise ConfigError(f"{el.name}: element type {k!r} has no ngspice writer")

    for col, inst, state in state_outputs:
        vectors[col] = f"v({names.elem[inst]}_{state})"

    models: list[str] = []
    used = {e.model for e in netlist.elements if e.kind != "n" and e.model}
    for mname, model in netlist.models.items():
        if mname in used:
            models.append(_model_card(mname, model, env))
    missing = used - set(netlist.models)
    if missing:
        raise ConfigError(f"unknown model(s): {', '.join(sorted(missing))}")

    for node, expr in netlist.ic.items():
        ic_lines.append(f".ic v({names.node[node]})={_fmt(_value(expr, env))}")

    if isinstance(options, str):
        if options not in OPTION_PRESETS:
            raise ConfigError(f"unknown ngspice options preset {options!r}; "
                              f"choose from {', '.join(OPTION_PRESETS)}")
        opts = dict(OPTION_PRESETS[options])
    else:
        opts = dict(DEFAULT_OPTIONS)
        opts.update(options or {})
    opt_text = " ".join(k if v is True else f"{k}={v if isinstance(v, str) else _fmt(v)}"
                        for k, v in opts.items() if v is not None and v is not False)
    tmax = tstep if tmax is None else tmax
    tran = f".tran {_fmt(tstep)} {_fmt(tstop)} {_fmt(tstart)} {_fmt(tmax)}" + (" uic" if uic else "")

    ttl = title if title is not None else (getattr(netlist, "title", "") or "neurospice deck")
    lines = [f"* {ttl.splitlines()[0] if ttl else 'neurospice deck'}"]
    lines += body
    lines += models
    lines += dot_lines
    lines += ic_lines
    if opt_text:
        lines.append(f".options {opt_text}")
    lines.append(tran)
    lines += [
        ".control",
        "set filetype=binary",
        "run",
        f"write {raw_name} {' '.join(vectors)}",
        "quit",
        ".endc",
        ".end",
    ]
    node_map = {k: v for k, v in names.node.items() if k != "0"}
    return Deck("\n".join(lines) + "\n", list(outputs), vectors, float(tstop), signs, node_map,
                dict(names.elem))


def netlist_to_ngspice(netlist, values: Mapping[str, float], *, tstep: float, tstop: float,
                       uic: bool, outputs: Sequence[str], tmax: float | None = None,
                       options: Mapping[str, Any] | str | None = None) -> str:
    """A complete, flat, all-numeric ngspice deck for one design.

    ``values`` are the resolved parameter values (`Netlist.resolve_params`).  ``tmax`` defaults to
    ``tstep``; ``options`` is a preset name from `OPTION_PRESETS` or a dict that updates
    `DEFAULT_OPTIONS` (a value of None drops an option).  The deck's
    ``.control`` block runs the transient and writes ``outputs`` (in that order, preceded by time)
    to ``out.raw`` in binary raw format.
    """
    return build_deck(netlist, values, tstep=tstep, tstop=tstop, uic=uic, outputs=outputs,
                      tmax=tmax, options=options).text


# --------------------------------------------------------------------------------------------------
# raw file

def read_raw(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a real (transient) ngspice raw file, binary or ascii: (variable names, data[points, vars])."""
    try:
        return _parse_raw(path, Path(path).read_bytes())
    except (ValueError, IndexError) as exc:  # a header without its data, or fields that are no numbers
        raise NgspiceError(f"{path}: truncated or malformed raw file ({str(exc).splitlines()[0][:80]})") from None


def _parse_raw(path: str | Path, data: bytes) -> tuple[list[str], np.ndarray]:
    """(names, data) of the raw file's bytes; ValueError/IndexError where they are cut short."""
    nvars = npoints = None
    names: list[str] = []
    pos = 0
    mode = None
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data)
        line = data[pos:end].decode("latin-1").rstrip("\r")
        pos = end + 1
        low = line.lower()
        if low.startswith("flags:") and "complex" in low:
            raise NgspiceError(f"{path}: complex raw files are not supported")
        if low.startswith("no. variables:"):
            nvars = int(line.split(":", 1)[1])
        elif low.startswith("no. points:"):
            npoints = int(line.split(":", 1)[1])
        elif low.startswith("variables:"):
            if nvars is None:
                raise NgspiceError(f"{path}: malformed raw file (no variable count)")
            for _ in range(nvars):
                end = data.find(b"\n", pos)
                fields = data[pos:end].decode("latin-1").split()
                pos = end + 1
                names.append(fields[1])
        elif low.startswith("binary:"):
            mode = "binary"
            break
        elif low.startswith("values:"):
            mode = "ascii"
            break
    if mode is None or nvars is None or npoints is None:
        raise NgspiceError(f"{path}: malformed raw file")
    if mode == "binary":
        arr = np.frombuffer(data, dtype="<f8", count=nvars * npoints, offset=pos)
    else:
        tokens = data[pos:].decode("latin-1").split()
        vals = []
        i = 0
        for _ in range(npoints):
            i += 1  # point index
            vals.extend(float(tokens[i + j]) for j in range(nvars))
            i += nvars
        arr = np.asarray(vals, dtype=float)
    return names, arr.reshape(npoints, nvars).copy()


# --------------------------------------------------------------------------------------------------
# running

# Lines that explain a failure, most specific first.
_ERR_PATS = [re.compile(p, re.IGNORECASE) for p in (
    r"^\s*error\b",
    r"fatal|too small|aborted|interrupted|can't find|cannot|unsupported|not available",
    r"error|singular|fail",
)]
# Messages that mean part of the deck was dropped: an error unless strict=False.
_IGNORED_PAT = re.compile(r"unrecognized parameter|unknown parameter|ignored|unsupported",
                          re.IGNORECASE)


def _first_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for pat in _ERR_PATS:
        for i, ln in enumerate(lines):
            if pat.search(ln):
                # "Error on line 5 ..." is followed by the offending line and the reason.
                if re.match(r"error on line", ln, re.IGNORECASE):
                    return " | ".join(lines[i:i + 3])
                return ln
    return lines[-1] if lines else "(no output)"


def run_deck(deck: Deck, *, timeout: float = 120, workdir: str | Path | None = None,
             times: Sequence[float] | np.ndarray | None = None, strict: bool = True) -> pd.DataFrame:
    """Run a `Deck` with ``ngspice -b``; return a DataFrame ``time, <outputs...>``.

    ``df.attrs``: ``wall_s`` (seconds spent in the ngspice subprocess), ``n_points``, ``warnings``
    (ngspice's warning lines, e.g. "singular matrix: check node b" for a floating node that ngspice
    then solved with gmin stepping).
    With ``times`` the columns are linearly interpolated onto those times.  ``strict`` turns ngspice's
    "unrecognized parameter ... ignored" / "unsupported ..." messages into errors (an ignored
    parameter or option means the reference simulates something else than asked).
    """
    exe = ngspice_executable()
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="neurospice_ngspice_")
        wd = Path(own_tmp.name)
    else:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
    try:
        deck_path = wd / DECK_NAME
        raw_path = wd / RAW_NAME
        deck_path.write_text(deck.text)
        if raw_path.exists():
            raw_path.unlink()
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([exe, "-b", DECK_NAME], cwd=wd, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise NgspiceError(f"ngspice did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise NgspiceError(f"cannot run {exe}: {exc.strerror}") from None
        wall = time.perf_counter() - t0
        log = (proc.stderr or "") + "\n" + (proc.stdout or "")
        if proc.returncode != 0 or not raw_path.exists():
            raise NgspiceError(f"ngspice failed (exit {proc.returncode}): {_first_error(log)}")
        lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
        ignored = [ln for ln in lines if _IGNORED_PAT.search(ln)]
        if strict and ignored:
            raise NgspiceError(f"ngspice ignored part of the deck: {ignored[0]}")
        warnings = [ln for ln in lines if ln.lower().startswith("warning") or ln in ignored]
        _names, arr = read_raw(raw_path)
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
    if arr.shape[0] == 0 or arr.shape[1] != len(deck.vectors) + 1:
        raise NgspiceError(f"ngspice wrote no usable data: {_first_error(log)}")
    t = arr[:, 0]
    if t[-1] < deck.tstop * (1 - 1e-9):
        raise NgspiceError(f"ngspice stopped at t={t[-1]:.6g} s before tstop={deck.tstop:.6g} s: "
                           f"{_first_error(log)}")
    cols = {"time": t}
    for j, name in enumerate(deck.outputs):
        sign = deck.signs[j] if j < len(deck.signs) else 1.0
        cols[name] = arr[:, j + 1] if sign == 1.0 else sign * arr[:, j + 1]
    df = pd.DataFrame(cols)
    if times is not None:
        tt = np.asarray(times, dtype=float)
        df = pd.DataFrame({"time": tt, **{n: np.interp(tt, t, df[n].to_numpy())
                                          for n in deck.outputs}})
    df.attrs["wall_s"] = wall
    df.attrs["n_points"] = int(arr.shape[0])
    df.attrs["warnings"] = warnings
    return df


def netlist_run(netlist, values: Mapping[str, float], outputs: Sequence[str], tstep: float,
                tstop: float, uic: bool = False, *, timeout: float = 120,
                workdir: str | Path | None = None, times=None, strict: bool = True,
                **deck_options) -> pd.DataFrame:
    """Write the deck for one design of ``netlist`` and run it (see `run_deck`)."""
    deck = build_deck(netlist, values, tstep=tstep, tstop=tstop, uic=uic, outputs=outputs,
                      **deck_options)
    return run_deck(deck, timeout=timeout, workdir=workdir, times=times, strict=strict)


def _circuit_tran(circuit) -> tuple[float, float, bool]:
    tran = getattr(circuit.netlist, "tran", None)
    tstep = getattr(circuit, "tstep", None) or (tran.tstep if tran else None)
    tstop = getattr(circuit, "tstop", None) or (tran.tstop if tran else None)
    uic = getattr(circuit, "uic", None)
    if uic is None:
        uic = bool(tran.uic) if tran else False
    if tstep is None or tstop is None:
        raise ConfigError(f"{getattr(circuit, 'name', 'circuit')}: no tstep/tstop for ngspice")
    return float(tstep), float(tstop), bool(uic)


def circuit_deck(circuit, params: Mapping[str, float] | None = None, **deck_options) -> Deck:
    """The `Deck` of one design of a `Circuit`."""
    tstep, tstop, uic = _circuit_tran(circuit)
    values = circuit.param_values(params)
    deck_options.setdefault("title", getattr(circuit, "name", None))
    deck_options.setdefault("tstart", float(getattr(circuit, "tstart", 0.0)))
    tran = getattr(circuit.netlist, "tran", None)
    if deck_options.get("tmax") is None and tran is not None and tran.tmax:
        deck_options["tmax"] = min(float(tran.tmax), tstep)   # a .tran tmax tighter than tstep
    return build_deck(circuit.netlist, values, tstep=tstep, tstop=tstop, uic=uic,
                      outputs=list(circuit.outputs), **deck_options)


def run_ngspice(circuit, params: Mapping[str, float] | None = None, *, timeout: float = 120,
                workdir: str | Path | None = None, times=None, strict: bool = True,
                **deck_options) -> pd.DataFrame:
    """Simulate one design of ``circuit`` with ngspice.

    Returns a DataFrame with ``time`` then one column per ``circuit.outputs`` entry, named exactly
    as requested; ``df.attrs["wall_s"]`` is the ngspice subprocess wall time.  ``deck_options``
    (``tmax``, ``options``) go to `netlist_to_ngspice`.
    """
    deck = circuit_deck(circuit, params, **deck_options)
    return run_deck(deck, timeout=timeout, workdir=workdir, times=times, strict=strict)


def run_ngspice_batch(circuit, designs: Sequence[Mapping[str, float] | None], progress: bool = True,
                      jobs: int = 1, *, timeout: float = 120, times=None, strict: bool = True,
                      **deck_options) -> list[pd.DataFrame]:
    """`run_ngspice` for each design, in order; ``df.attrs["wall_s"]`` holds each wall time.

    ``jobs > 1`` runs that many ngspice processes at once (a thread pool that only waits on the
    subprocesses, so the circuit object is never pickled); ``jobs <= 0`` means one per CPU.
    Per-design wall times are measured around each subprocess call, so they stay comparable
    between serial and parallel runs only as long as ``jobs`` does not exceed the free cores.
    """
    from concurrent.futures import ThreadPoolExecutor

    decks = [circuit_deck(circuit, d, **deck_options) for d in designs]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(decks), desc=f"ngspice {getattr(circuit, 'name', '')}".rstrip(),
                   unit="design")

    def one(deck: Deck) -> pd.DataFrame:
        df = run_deck(deck, timeout=timeout, times=times, strict=strict)
        if bar is not None:
            bar.update(1)
        return df

    try:
        if jobs == 1 or len(decks) <= 1:
            return [one(d) for d in decks]
        workers = (os.cpu_count() or 1) if jobs <= 0 else jobs
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, decks))
    finally:
        if bar is not None:
            bar.close()


def batch_wall_times(frames: Sequence[pd.DataFrame]) -> np.ndarray:
    """The ngspice wall time (s) of each DataFrame returned by `run_ngspice_batch`."""
    return np.array([f.attrs.get("wall_s", float("nan")) for f in frames], dtype=float)

