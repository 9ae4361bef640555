"""`run_optimize(cfg, outdir)`: one inverse-design run from a Hydra config, verified, written to result.json."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from circuits.errors import ConfigError, NgspiceError
from optimize.gradient import SearchResult, gradient_search
from optimize.tasks import Task, task_from_config

__all__ = ["run_optimize", "format_result", "default_surrogate_path", "load_task_surrogate",
           "estimate_range", "active_bounds", "check_task_argument", "METHODS", "SIMULATORS", "ROOT"]

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("gradient", "optuna", "reference_gradient")
SIMULATORS = ("ngspice", "reference")


def default_surrogate_path(circuit: str) -> Path:
    """pretrained/<circuit>.pt in the repository."""
    return ROOT / "pretrained" / f"{circuit}.pt"


def load_task_surrogate(task: Task, path: str | Path | None, required: bool = True):
    """The task circuit's surrogate (default pretrained/<circuit>.pt); None if absent and not required."""
    from surrogate.api import load_surrogate

    p = Path(path).expanduser() if path else default_surrogate_path(task.circuit.name)
    if not p.is_file():
        if not required:
            return None
        how = (f"train it with `scripts/train_all.sh {task.circuit.name}`" if not path else
               "check the surrogate= path")
        raise ConfigError(f"no surrogate for circuit '{task.circuit.name}' at {p}: {how}, "
                          f"pass surrogate=PATH, or use method=optuna / method=reference_gradient")
    model = load_surrogate(p)
    if model.circuit.name != task.circuit.name or model.circuit.space.names != task.space.names:
        raise ConfigError(f"{p}: surrogate of circuit '{model.circuit.name}' {model.circuit.space.names}, "
                          f"but task '{task.name}' designs circuit '{task.circuit.name}' {task.space.names}")
    return model


def estimate_range(task: Task, evaluator, samples: int, seed: int = 0) -> tuple[float, float] | None:
    """(min, max) of the task's measurement over the free box: corners + Sobol designs, one no-grad batch."""
    from optimize.gradient import prescreen_designs

    U = prescreen_designs(len(task.free), samples, seed=seed)
    with torch.no_grad():
        m = evaluator.measure(task.designs(U), [task.objective.measurement])[:, 0]
    m = m[torch.isfinite(m)]
    return (float(m.min()), float(m.max())) if m.numel() else None


def active_bounds(task: Task, u_free: torch.Tensor, tol: float) -> dict[str, str]:
    """{free parameter: "low" | "high"} for parameters within ``tol`` of a bound (unit cube)."""
    out = {}
    for name, u in zip(task.free, u_free.tolist()):
        if u <= tol:
            out[name] = "low"
        elif u >= 1 - tol:
            out[name] = "high"
    return out


def _union(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None:
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), max(a[1], b[1]))


#: measurements whose every value is a positive number (a target <= 0 is outside any design's reach)
POSITIVE_KINDS = ("frequency", "period", "delay", "switch_time")


def _search_task(cfg, task: Task, method: str) -> tuple[Task, tuple[float, float] | None]:
    """The task the search aims at, and the surrogate's estimate of the achievable range.

    A target outside that range (``1e99``, or ``0`` for a delay) gives the search no gradient
    (J flat to double precision) or no meaning; the search then aims just past the nearest end of
    the range, which drives the design to the bounds that realise the closest achievable value."""
    from optimize.correct import retarget
    from optimize.evaluators import SurrogateEvaluator

    positive = task.objective.measurement.kind in POSITIVE_KINDS
    model = load_task_surrogate(task, cfg.get("surrogate"), required=False)
    if model is None:
        if positive and task.target <= 0:
            raise ConfigError(f"task.target={task.target:g}: a {task.objective.measurement.kind} is > 0 "
                              f"{task.objective.measurement.unit} for every design")
        return task, None
    est = estimate_range(task, SurrogateEvaluator(model), max(int(cfg.range.samples), 64), int(cfg.get("seed", 0)))
    if est is None or est[0] <= task.target <= est[1]:
        return task, est
    lo, hi = est
    span = max(hi - lo, abs(hi), abs(lo), 1e-300)
    if task.target < lo:
        aim = lo / 2 if positive and lo > 0 else lo - 0.5 * span
    else:
        aim = hi * 2 if positive and hi > 0 else hi + 0.5 * span
    aimed = retarget(task, aim)
    aimed.objective.scale = abs(aim)
    return aimed, est


def _checker(task: Task, choice: str, rtol: float):
    """The simulator that checks surrogate proposals: ngspice (one process, ~0.1 s on ring5) when
    installed and asked for, else the reference solver (seconds for one design at rtol 1e-5)."""
    from optimize.evaluators import NgspiceEvaluator, ReferenceEvaluator

    if choice not in ("auto", "ngspice", "reference"):
        raise ConfigError(f"gradient.check={choice!r} unknown (known: auto, ngspice, reference)")
    if choice in ("auto", "ngspice"):
        try:
            return NgspiceEvaluator(task.circuit), "ngspice"  # raises NgspiceError if it is not installed
        except NgspiceError:
            if choice == "ngspice":
                raise
    return ReferenceEvaluator(task.circuit, rtol=rtol), "reference"


def _search(cfg, task: Task, method: str, progress: bool) -> tuple[SearchResult, dict[str, Any]]:
    """Run the configured search; returns the result and bookkeeping (evaluator names, call counts)."""
    from optimize.evaluators import NgspiceEvaluator, ReferenceEvaluator, SurrogateEvaluator

    seed = int(cfg.get("seed", 0))
    rtol = float(cfg.solver.rtol)
    info: dict[str, Any] = {"surrogate_calls": 0, "corrections": []}
    if method == "gradient":
        g = cfg.gradient
        model = load_task_surrogate(task, cfg.get("surrogate"))
        ev = SurrogateEvaluator(model, points=int(g.points), newton_steps=int(g.newton_steps))
        kw = dict(prescreen=int(g.prescreen), starts=int(g.starts), seed=seed, adam_steps=int(g.adam_steps),
                  lr=float(g.lr), lbfgs_steps=int(g.lbfgs_steps), stop_fraction=float(g.stop_fraction),
                  patience=int(g.patience), progress=progress)
        first = gradient_search(task, ev, **kw)
        rounds = int(g.get("corrections", 0))
        res, sim_calls = first, 0
        lo_hi = first.range
        if rounds > 0 and math.isfinite(first.value):
            from optimize.correct import corrected_search, newton_retarget

            check, info["check_simulator"] = _checker(task, str(g.get("check", "auto")), rtol)
            done = {"first": first}

            def search(t: Task) -> SearchResult:
                if "first" in done:  # round 0 is the search already made
                    done["last"] = done.pop("first")
                elif not t.objective.has_penalties:  # later rounds: the smallest move that hits t's target
                    done["last"] = newton_retarget(t, ev, done["last"].u_free,
                                                   stop_fraction=float(g.stop_fraction))
                else:  # with penalties there is no "smallest move": warm-started search, no new prescreen
                    done["last"] = gradient_search(t, ev, **{**kw, "prescreen": 0},
                                                   init_u=done["last"].u_free.unsqueeze(0))
                return done["last"]

            res, info["corrections"] = corrected_search(task, search, check, rounds=rounds,
                                                        accept=float(g.get("correct_below", 0.5)))
            sim_calls = check.calls
            res.range = _union(lo_hi, res.range)
        info.update(evaluator="surrogate", simulator_calls=sim_calls, surrogate_calls=ev.calls,
                    range_source="surrogate")
        return res, info
    if method == "reference_gradient":
        g = cfg.reference_gradient
        ev = ReferenceEvaluator(task.circuit, rtol=rtol)
        res = gradient_search(task, ev, prescreen=int(g.prescreen), starts=int(g.starts), seed=seed,
                              adam_steps=int(g.adam_steps), lr=float(g.lr), lbfgs_steps=int(g.lbfgs_steps),
                              stop_fraction=float(g.stop_fraction), patience=int(g.patience), progress=progress)
        info.update(evaluator="reference", simulator_calls=ev.calls, range_source="reference")
        return res, info
    from optimize.optuna_baseline import optuna_search

    simulator = str(cfg.simulator)
    if simulator not in SIMULATORS:
        raise ConfigError(f"simulator={simulator!r} unknown (known: {', '.join(SIMULATORS)})")
    if simulator == "ngspice":
        from circuits.ngspice import ngspice_executable

        ngspice_executable()  # one-line NgspiceError with an install hint if it is missing
        ev = NgspiceEvaluator(task.circuit)
    else:
        ev = ReferenceEvaluator(task.circuit, rtol=rtol)
    o = cfg.optuna
    storage = o.get("storage")
    res = optuna_search(task, ev, n_trials=int(o.n_trials), seed=seed, storage=storage,
                        study_name=o.get("study_name"), n_jobs=int(o.n_jobs),
                        n_startup_trials=int(o.startup_trials), stop_fraction=float(o.stop_fraction),
                        verbose=bool(o.verbose), progress=progress)
    info.update(evaluator=simulator, simulator_calls=ev.calls, range_source=simulator)
    return res, info


def _storage_default(cfg, outdir: Path) -> None:
    """Resolve optuna.storage=default to an SQLite file in the run directory."""
    from omegaconf import open_dict

    if str(cfg.method) == "optuna" and str(cfg.optuna.get("storage")) == "default":
        with open_dict(cfg):
            cfg.optuna.storage = f"sqlite:///{(outdir / 'optuna.db').resolve()}"


def run_optimize(cfg, outdir: str | Path) -> dict[str, Any]:
    """Build the task, search, verify with the reference solver and ngspice, write result.json."""
    from omegaconf import OmegaConf

    from circuits import io
    from optimize.verify import verify_design

    outdir = Path(outdir)
    t0 = time.perf_counter()
    method = str(cfg.method)
    if method not in METHODS:
        raise ConfigError(f"method={method!r} unknown (known: {', '.join(METHODS)})")
    task = task_from_config(OmegaConf.to_container(cfg.task, resolve=True))
    _storage_default(cfg, outdir)
    progress = bool(cfg.get("progress", True))
    aimed, est = _search_task(cfg, task, method)
    res, info = _search(cfg, aimed, method, progress)
    wall = time.perf_counter() - t0

    # achievable range: what the search saw, plus the surrogate's estimate
    rng, range_source = res.range, info["range_source"]
    if est is not None:
        rng, range_source = _union(rng, est), (range_source if "surrogate" in range_source
                                               else f"{range_source}+surrogate")
    elif method != "gradient" and int(cfg.range.samples) > 0:
        model = load_task_surrogate(task, cfg.get("surrogate"), required=False)
        if model is not None:
            from optimize.evaluators import SurrogateEvaluator

            est = estimate_range(task, SurrogateEvaluator(model), int(cfg.range.samples), int(cfg.get("seed", 0)))
            rng, range_source = _union(rng, est), f"{range_source}+surrogate"

    tv = time.perf_counter()
    verified = verify_design(task, res.design, reference=bool(cfg.verify.reference),
                             ngspice=bool(cfg.verify.ngspice), rtol=float(cfg.solver.rtol))
    verify_s = time.perf_counter() - tv

    real = [v["value"] for v in verified.values() if v.get("status") == "ok" and math.isfinite(v["value"])]
    real += [c["checked"] for c in info["corrections"] if math.isfinite(c["checked"])]
    if real:  # values a real simulator produced are achievable by definition
        rng = _union(rng, (min(real), max(real)))
        range_source = f"{range_source}+verification"
    obj = task.objective
    values = res.values if res.values is not None else torch.tensor([res.value], dtype=torch.float64)
    predicted = obj.summary(res.design.reshape(1, -1), values.reshape(1, -1).to(torch.float64))[0]
    predicted["by"] = info["evaluator"]
    ok = [v for v in verified.values() if v.get("status") == "ok" and math.isfinite(v["value"])]
    achieved = any(v["within_tolerance"] for v in ok)
    in_est = rng is not None and rng[0] <= task.target <= rng[1]
    in_range = bool(in_est or achieved)
    tol = float(cfg.range.bound_tol_optuna if method == "optuna" else cfg.range.bound_tol)
    best_verified = ok[0] if ok else None
    result: dict[str, Any] = {
        "task": task.name,
        "method": method if method != "optuna" else f"optuna-{info['evaluator']}",
        "params": task.params(res.design),
        "predicted": predicted,
        "verified": verified,
        "simulator_calls": int(info["simulator_calls"]),
        "wall_time_s": wall,
        "target": task.target,
        "tolerance": task.tolerance,
        "measurement": obj.measurement.describe(),
        "unit": obj.measurement.unit,
        "free": task.free,
        "in_range": in_range,
        "range": list(rng) if rng is not None else None,
        "range_source": range_source,
        "active_bounds": active_bounds(task, res.u_free, tol),
        "surrogate_calls": int(info["surrogate_calls"]),
        "verify_calls": sum(1 for v in verified.values() if v.get("status") == "ok"),
        "verify_time_s": verify_s,
        "converged": bool(res.converged),
        "corrections": info["corrections"],
        "check_simulator": info.get("check_simulator"),
        "search": {"iterations": len(res.history), **res.extra},
        "status": _status(verified, achieved, in_range),
    }
    if not in_range:
        closest = best_verified["value"] if best_verified else predicted["value"]
        result["closest_achievable"] = closest
    out_path = Path(cfg.output).expanduser() if cfg.get("output") else outdir / "result.json"
    io.write_json(out_path, result)
    result["result_path"] = str(out_path)
    return result


def _status(verified: dict[str, dict[str, Any]], achieved: bool, in_range: bool) -> str:
    """met | missed | out_of_range | unverified (no simulator produced a value for the design)."""
    if not any(v.get("status") == "ok" for v in verified.values()):
        return "unverified"
    return "met" if achieved else ("missed" if in_range else "out_of_range")


#: exit status of scripts/optimize.py per result status (0: the verified design meets the target)
EXIT_STATUS = {"met": 0, "missed": 3, "out_of_range": 3, "unverified": 4}


def verdict(r: dict[str, Any]) -> str:
    """The last line printed: whether the verified design meets the target."""
    failed = {k: v.get("error", v.get("status")) for k, v in r["verified"].items() if v.get("status") != "ok"}
    return {"met": "target met (verified)",
            "missed": "TARGET MISSED: no verified value within the tolerance",
            "out_of_range": "TARGET MISSED: out of the achievable range",
            "unverified": "NOT VERIFIED: " + "; ".join(f"{k} {v}" for k, v in failed.items())}[r["status"]]


def _fmt(x: Any, spec: str) -> str:
    if isinstance(x, float) and math.isinf(x):
        return f"{'+' if x > 0 else '-'}inf".rjust(len(format(0.0, spec)))
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def format_result(r: dict[str, Any]) -> str:
    """The short table printed by scripts/optimize.py."""
    unit = r["unit"]
    lines = [f"{r['task']}: {r['measurement']} -> target {r['target']:.4g} {unit} "
             f"(tolerance {100 * r['tolerance']:g} %), method {r['method']}",
             f"  {'':10s} {'value':>14s} {'rel.err':>10s} {'objective':>10s}"]
    rows = [("predicted", r["predicted"])] + list(r["verified"].items())
    for name, v in rows:
        if v.get("status", "ok") != "ok":
            lines.append(f"  {name:10s} {v['status']}" + (f": {v['error']}" if v.get("error") else ""))
            continue
        lines.append(f"  {name:10s} {_fmt(v['value'], '14.6g')} {_fmt(v['rel_error'], '+10.2e')} "
                     f"{_fmt(v['objective'], '10.2e')}" + (f"  ({v['by']})" if name == "predicted" else ""))
    lines.append("  params: " + " ".join(f"{k}={v:.5g}" for k, v in r["params"].items()))
    extra = f", surrogate evaluations {r['surrogate_calls']}" if r["surrogate_calls"] else ""
    lines.append(f"  simulator calls {r['simulator_calls']} (+{r['verify_calls']} to verify){extra}; "
                 f"wall {r['wall_time_s']:.1f} s (+{r['verify_time_s']:.1f} s to verify)")
    if not r["in_range"]:
        lo, hi = r["range"] if r["range"] else (math.nan, math.nan)
        bounds = ", ".join(f"{k} at its {v} bound" for k, v in r["active_bounds"].items()) or "none"
        lines.append(f"  OUT OF RANGE: target {r['target']:.4g} {unit} is outside the achievable range "
                     f"[{lo:.4g}, {hi:.4g}] {unit} (estimated by {r['range_source']}); closest achievable "
                     f"{_fmt(r.get('closest_achievable'), '.4g')} {unit}; active bounds: {bounds}")
    return "\n".join(lines)


def check_task_argument(argv: list[str] | None = None) -> None:
    """Exit 2 with one line on stderr if a ``task=NAME`` command-line override names no task config.

    (Hydra itself would report an unknown config-group option over several lines.)
    """
    import sys

    from optimize.tasks import TASK_DIR, known_tasks

    for arg in (sys.argv[1:] if argv is None else argv):
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key == "task" and not (TASK_DIR / f"{value}.yaml").is_file():
            print(f"error: unknown task '{value}' (known: {', '.join(known_tasks())})", file=sys.stderr)
            sys.exit(2)
