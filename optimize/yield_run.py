"""`run_yield(cfg, outdir)`: the Monte Carlo yield job of scripts/yield.py; writes yield.json and a histogram."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from circuits.errors import ConfigError
from optimize.montecarlo import monte_carlo_yield, passes, wilson_interval
from optimize.tasks import Task, task_from_config

__all__ = ["run_yield", "format_yield", "DEFAULT_SIGMA"]

#: relative sigma of every free parameter when no `variation.NAME` is given
DEFAULT_SIGMA = 0.05


def _sigmas(cfg, task: Task) -> dict[str, float]:
    """{parameter: relative sigma} from `variation.NAME=S` (default: DEFAULT_SIGMA on each free parameter)."""
    from omegaconf import OmegaConf

    given = OmegaConf.to_container(cfg.variation, resolve=True) if cfg.get("variation") else {}
    sigmas = {str(k).lower(): v for k, v in (given or {}).items()} or {p: DEFAULT_SIGMA for p in task.free}
    for name, s in sigmas.items():
        if name not in task.space.names:
            raise ConfigError(f"variation.{name}: not a design parameter of circuit '{task.circuit.name}' "
                              f"(parameters: {', '.join(task.space.names)})")
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 < float(s) < 1:
            raise ConfigError(f"variation.{name}={s!r}: a relative sigma must be a number in (0, 1)")
    return {k: float(v) for k, v in sigmas.items()}


def _centre(cfg, task: Task) -> torch.Tensor:
    """The full design the variation is centred on: task.fixed values over the nominal, then `centre.NAME`."""
    from omegaconf import OmegaConf

    from circuits.config_check import spice_float

    given = OmegaConf.to_container(cfg.centre, resolve=True) if cfg.get("centre") else {}
    values = dict(task.fixed)
    for name, v in (given or {}).items():
        try:
            values[str(name).lower()] = spice_float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"centre.{name}={v!r}: not a number") from None
    task.space.check(values, where="centre: ")
    return task.space.vector(values, dtype=torch.float64)


def _verify(task: Task, result, n: int, seed: int) -> dict[str, Any]:
    """ngspice on n random samples: agreement of pass/fail with the surrogate, ngspice-only yield."""
    from optimize.evaluators import NgspiceEvaluator

    pick = torch.randperm(len(result.values), generator=torch.Generator().manual_seed(seed + 1))[:n]
    evaluator = NgspiceEvaluator(task.circuit, jobs=2)
    began = time.perf_counter()
    values = evaluator.measure(result.designs[pick], [task.objective.measurement])[:, 0].to(torch.float64)
    seconds = time.perf_counter() - began
    ok = passes(values, task.target, task.tolerance)
    agree = int((ok == result.passed[pick]).sum())
    k = int(ok.sum())
    rel = ((result.values[pick] - values) / values).abs()
    return {"samples": int(n), "agreement": agree / n, "ngspice_yield": k / n,
            "ngspice_yield_95": list(wilson_interval(k, n)), "ngspice_failures": int((~torch.isfinite(values)).sum()),
            "measurement_rel_error_median": float(rel[torch.isfinite(rel)].median()) if bool(torch.isfinite(rel).any()) else None,
            "measurement_rel_error_worst": float(rel[torch.isfinite(rel)].max()) if bool(torch.isfinite(rel).any()) else None,
            "seconds": seconds, "seconds_per_design": seconds / max(n, 1)}


def _histogram(task: Task, values: torch.Tensor, summary: dict[str, Any]):
    """Histogram of the measurement with the spec limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = values[torch.isfinite(values)].numpy()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.hist(finite, bins=120, color="tab:blue", alpha=0.8)
    spec = summary["spec"]
    for x in (spec["low"], spec["high"]):
        ax.axvline(x, color="tab:red", lw=1.2, ls="--")
    ax.axvline(spec["target"], color="k", lw=1.0, label="target")
    m = task.objective.measurement
    ax.set_xlabel(f"{m.kind} of {m.signal}")
    ax.set_ylabel("samples")
    lo, hi = summary["yield_95"]
    ax.set_title(f"{task.name}: yield {summary['yield']:.2%} (95 %: {lo:.2%}-{hi:.2%}), {summary['samples']} samples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_yield(cfg, outdir: str | Path) -> dict[str, Any]:
    """Monte Carlo yield of a task's spec under process variation; writes yield.json and yield.png."""
    from omegaconf import OmegaConf

    from circuits import io
    from optimize.evaluators import SurrogateEvaluator
    from optimize.run import load_task_surrogate

    began = time.perf_counter()
    outdir = Path(outdir)
    out = Path(cfg.output) if cfg.get("output") else outdir / "yield.json"
    task = task_from_config(OmegaConf.to_container(cfg.task, resolve=True))
    sigmas, centre = _sigmas(cfg, task), _centre(cfg, task)
    samples = int(cfg.samples)
    model = load_task_surrogate(task, cfg.get("surrogate"))
    # no design gradients here: float32 networks measure 1.7x faster, within 1.2e-7 (relative) of
    # float64 on ring5's frequency over 20k designs
    evaluator = SurrogateEvaluator(model, points=int(cfg.points), chunk=int(cfg.chunk), float64=False)
    bar = None
    if cfg.get("progress", True) and samples >= 20_000:
        from tqdm import tqdm
        bar = tqdm(total=samples, desc="surrogate", unit="design", leave=False)
    result = monte_carlo_yield(task, evaluator, centre, sigmas, samples, seed=int(cfg.seed), chunk=int(cfg.chunk),
                               progress=(lambda done: bar.update(done - bar.n)) if bar else None)
    if bar:
        bar.close()
    summary = result.summary(task.target, task.tolerance)
    report: dict[str, Any] = {"task": task.name, "circuit": task.circuit.name, "measurement": task.objective.measurement.kind,
                              "centre": task.space.to_dict(centre), "variation": sigmas, **summary,
                              "end_to_end_s": time.perf_counter() - began}
    if int(cfg.verify) > 0:
        report["verify"] = _verify(task, result, min(int(cfg.verify), samples), int(cfg.seed))
    io.write_json(out, report)
    io.save_figure(out.with_suffix(".png"), _histogram(task, result.values, summary))
    report["result_path"] = str(out)
    return report


def format_yield(r: dict[str, Any]) -> str:
    """The yield report as a few lines, ending with the verdict line."""
    lo, hi = r["yield_95"]
    spec = r["spec"]
    lines = [f"{r['task']}: {r['measurement']} within {spec['tolerance']:.3g} of {spec['target']:.6g} "
             f"([{spec['low']:.6g}, {spec['high']:.6g}]), variation {r['variation']}",
             f"  surrogate: {r['samples']} samples in {r['seconds']:.2f} s ({r['end_to_end_s']:.2f} s end to end); "
             f"outside the trained box (redrawn): {r['outside_box_share']:.2%}",
             "  quantiles: " + ", ".join(f"{k} {v:.5g}" for k, v in r["quantiles"].items() if k in ("1%", "50%", "99%"))]
    v = r.get("verify")
    if v:
        vlo, vhi = v["ngspice_yield_95"]
        lines.append(f"  ngspice on {v['samples']} samples: yield {v['ngspice_yield']:.2%} (95 %: {vlo:.2%}-{vhi:.2%}), "
                     f"pass/fail agreement {v['agreement']:.2%}, {1e3 * v['seconds_per_design']:.0f} ms per design "
                     f"(100,000 samples: {1e5 * v['seconds_per_design'] / 3600:.1f} h)")
    lines.append(f"{r['task']}: yield {r['yield']:.2%} (95 %: {lo:.2%}-{hi:.2%}) over {r['samples']} samples")
    return "\n".join(lines)
