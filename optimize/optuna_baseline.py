"""Baseline: Optuna TPE over a task's free parameters, every trial one real simulation.

Storage (``storage=``): None -> in memory; ``journal:PATH`` -> `JournalStorage` on a
`JournalFileBackend` (an append-only file several processes can share); anything else is an
SQLAlchemy URL (``sqlite:///run/optuna.db``, ``postgresql://...``).  With a shared storage and the
same ``study_name`` several worker processes contribute trials to one study (``load_if_exists``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from circuits.errors import ConfigError
from optimize.evaluators import Evaluator
from optimize.gradient import SearchResult
from optimize.objectives import FAIL_OBJECTIVE
from optimize.tasks import Task

__all__ = ["make_storage", "optuna_search"]


def make_storage(storage: str | None):
    """An Optuna storage from a config string (see the module docstring); None stays None (in memory)."""
    if storage is None or str(storage).strip() in ("", "memory", "none"):
        return None
    storage = str(storage)
    if storage.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in storage:
        raise ConfigError(f"optuna storage {storage!r}: expected an SQLAlchemy URL (sqlite:///file.db), "
                          f"journal:PATH or memory")
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return storage


def optuna_search(task: Task, evaluator: Evaluator, *, n_trials: int = 100, seed: int = 0,
                  storage: str | None = None, study_name: str | None = None, n_jobs: int = 1,
                  n_startup_trials: int = 10, stop_fraction: float = 1.0, verbose: bool = False,
                  progress: bool = False) -> SearchResult:
    """TPE (seeded) on the task's objective evaluated by ``evaluator`` (ngspice or the reference solver).

    Stops after ``n_trials`` trials of this process, or as soon as a trial's |relative error| is at
    most ``stop_fraction * task.tolerance`` (objectives without penalties only).  The best trial of
    the study (all workers) is returned; ``calls`` counts this process's simulations.
    """
    import optuna

    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    calls0 = evaluator.calls
    obj = task.objective
    meas = obj.measurements()
    space = task.space
    free = [space.params[i] for i in task.free_idx]
    base = task.base_vector()
    stop_rel = stop_fraction * task.tolerance
    history: list[dict[str, float]] = []
    seen: list[float] = []

    def objective(trial) -> float:
        p = base.clone()
        for prm, i in zip(free, task.free_idx):
            p[i] = trial.suggest_float(prm.name, prm.low, prm.high, log=prm.log)
        with torch.no_grad():
            values = evaluator.measure(p.unsqueeze(0), meas)
            J = float(obj(p.unsqueeze(0), values)[0])
        m = float(values[0, 0])
        rel = float(obj.rel_error(m)) if math.isfinite(m) else math.nan
        trial.set_user_attr("value", m if math.isfinite(m) else None)
        trial.set_user_attr("values", [float(x) if math.isfinite(float(x)) else None for x in values[0]])
        trial.set_user_attr("rel_error", rel if math.isfinite(rel) else None)
        if math.isfinite(m):
            seen.append(m)
        history.append({"step": len(history) + 1, "phase": "trial", "objective": J, "rel_error": rel})
        return J if math.isfinite(J) else FAIL_OBJECTIVE

    def stop_on_tolerance(study, trial) -> None:
        rel = trial.user_attrs.get("rel_error")
        if not obj.has_penalties and rel is not None and abs(rel) <= stop_rel:
            study.stop()

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    name = study_name or f"{task.name}-{evaluator.name}"
    study = optuna.create_study(storage=make_storage(storage), sampler=sampler, study_name=name,
                                direction="minimize", load_if_exists=True)
    study.optimize(objective, n_trials=n_trials, n_jobs=n_jobs, callbacks=[stop_on_tolerance],
                   show_progress_bar=progress)
    best = study.best_trial
    design = base.clone()
    for prm, i in zip(free, task.free_idx):
        design[i] = float(best.params[prm.name])
    value = best.user_attrs.get("value")
    value = math.nan if value is None else float(value)
    rng = (min(seen), max(seen)) if seen else None
    u_free = task.unit_free(design.unsqueeze(0))[0]
    vals = torch.tensor([math.nan if x is None else x for x in best.user_attrs.get("values", [value])],
                        dtype=torch.float64)
    return SearchResult(design=design, u_free=u_free, value=value, objective=float(best.value),
                        rel_error=float(obj.rel_error(value)) if math.isfinite(value) else math.nan,
                        calls=evaluator.calls - calls0, wall_s=time.perf_counter() - t_start,
                        history=history, range=rng, values=vals,
                        converged=(not obj.has_penalties) and math.isfinite(value)
                        and abs(obj.rel_error(value)) <= stop_rel,
                        extra={"study_name": name, "trials_in_study": len(study.trials),
                               "best_trial": best.number})
