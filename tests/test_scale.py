"""Scaling out: Hydra launcher configs, sweep collection, DDP on 2 CPU processes, Optuna workers
sharing one study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from circuits.errors import ConfigError
from surrogate.collect import collect, collect_runs, find_runs

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = str(ROOT / "configs")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["circuit=rc", "recipe=manual", "surrogate.target_nrmse=1", "surrogate.target_median_nrmse=1", "trainer.max_steps=5", "surrogate.designs_per_batch=2", "surrogate.times_per_design=8",
        "model.width=8", "model.depth=1", "surrogate.val_designs=2", "surrogate.val_points=21",
        "trainer.enable_progress_bar=false"]


def script(name: str, *args: str, cwd: Path, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------------
# launcher and trainer configs


def test_launcher_and_ddp_configs_compose():
    from hydra.utils import get_class

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        local = compose(config_name="train", overrides=["hydra/launcher=local"], return_hydra_config=True)
        slurm = compose(config_name="train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=cpu"],
                        return_hydra_config=True)
        plain = compose(config_name="train", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
        ddp = compose(config_name="train", overrides=["trainer=ddp", "trainer.max_steps=7"])
    assert local.hydra.launcher.n_jobs == 2 and plain.hydra.launcher.n_jobs == -1
    assert get_class(local.hydra.launcher._target_).__name__ == "JoblibLauncher"
    launcher = slurm.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert (launcher.partition, launcher.cpus_per_task, launcher.timeout_min, launcher.tasks_per_node) == \
        ("cpu", 4, 120, 1)
    assert launcher.submitit_folder.endswith(".submitit/%j")
    trainer = OmegaConf.to_container(ddp.trainer)
    assert trainer["accelerator"] == "cpu" and trainer["devices"] == 2 and trainer["max_steps"] == 7
    assert trainer["strategy"].startswith("ddp") and "spawn" not in trainer["strategy"]
    assert trainer["log_every_n_steps"] == 10  # the rest comes from trainer/cpu.yaml


def test_ddp_inside_a_local_sweep_is_refused_in_one_line(tmp_path):
    proc = script("train.py", "-m", "trainer=ddp", *TINY, "seed=0", f"hydra.sweep.dir={tmp_path}/sweep",
                  cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "multirun sweep" in errors[0] and "hydra/launcher=slurm" in errors[0]
    assert not list((tmp_path / "sweep").rglob("metrics.json"))


# --------------------------------------------------------------------------------------------------
# collect


def fake_run(folder: Path, overrides: list[str], metrics: dict | None, *, ckpt: bool = False) -> None:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if ckpt:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")


def metrics_for(circuit: str, outputs: list[str], worst: float) -> dict:
    return {"circuit": circuit, "nrmse_median": {o: worst / 2 for o in outputs},
            "nrmse_worst": {o: worst for o in outputs}, "nrmse_worst_overall": worst,
            "nrmse_median_overall": worst / 2, "worst_design": {"r": 1500.0}, "steps": 100, "designs": 3}


@pytest.fixture()
def sweep(tmp_path) -> Path:
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    jobs = [("circuit=rc", 0, 0.02), ("circuit=rc", 1, 0.03), ("circuit=amp", 0, 0.05), ("circuit=amp", 1, None)]
    for num, (circ, seed, worst) in enumerate(jobs):
        name = circ.split("=")[1]
        outputs = ["v(out)"] if name == "rc" else ["v(out)", "v(mid)"]
        fake_run(root / str(num), [circ, f"seed={seed}", "trainer.max_steps=100", "model.width=16"],
                 None if worst is None else metrics_for(name, outputs, worst), ckpt=worst is None)
    return root


def test_collect_one_row_per_run_with_config_and_metric_columns(sweep):
    frame = collect_runs(sweep)
    assert list(frame["run"]) == ["0", "1", "2", "3"]
    assert list(frame["circuit"]) == ["rc", "rc", "amp", "amp"]
    assert list(frame["seed"]) == [0, 1, 0, 1]
    assert set(frame["model.width"]) == {16} and set(frame["trainer.max_steps"]) == {100}
    assert list(frame["status"]) == ["ok", "ok", "ok", "incomplete"]
    assert frame.loc[0, "nrmse_worst.v(out)"] == 0.02 and frame.loc[2, "nrmse_worst.v(mid)"] == 0.05
    assert pd.isna(frame.loc[0, "nrmse_worst.v(mid)"])            # rc has no v(mid)
    assert frame.loc[1, "worst_design.r"] == 1500.0
    assert pd.isna(frame.loc[3, "nrmse_worst_overall"])           # killed run: no metrics trusted
    assert frame.loc[3, "last_ckpt"].endswith("3/checkpoints/last.ckpt") and pd.isna(frame.loc[0, "last_ckpt"])
    assert frame.loc[2, "overrides"] == "circuit=amp seed=0 trainer.max_steps=100 model.width=16"
    assert not any(c.startswith(("circuit.", "hydra")) for c in frame.columns)  # netlist text etc. left out
    assert "metrics.circuit" not in frame.columns                # same as the config column: not repeated


def test_collect_writes_csv_and_parquet_atomically(sweep, tmp_path):
    frame, path = collect(sweep)
    assert path == sweep / "table.csv"
    back = pd.read_csv(path)
    assert len(back) == 4 and list(back["status"]) == ["ok", "ok", "ok", "incomplete"]
    assert back["nrmse_worst_overall"].iloc[:3].tolist() == [0.02, 0.03, 0.05]
    _, path = collect(sweep, tmp_path / "out" / "table.parquet")
    back = pd.read_parquet(path)
    assert list(back["circuit"]) == list(frame["circuit"]) and back["seed"].tolist() == [0, 1, 0, 1]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(find_runs(sweep / "2")) == 1  # a single run folder is a table of one


def test_collect_survives_a_run_killed_while_hydra_wrote_its_config(sweep):
    (sweep / "1" / ".hydra" / "config.yaml").write_text("seed: [0,\n  model: {width")
    frame = collect_runs(sweep)
    assert list(frame["status"]) == ["ok", "unreadable config", "ok", "incomplete"]
    assert pd.isna(frame.loc[1, "nrmse_worst_overall"]) and frame.loc[2, "circuit"] == "amp"


def test_collect_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        collect_runs(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no Hydra runs"):
        collect_runs(tmp_path)
    with pytest.raises(ConfigError, match="use a .csv or .parquet"):
        collect(tmp_path, tmp_path / "table.xlsx")


def test_collect_script(sweep, tmp_path):
    proc = script("collect.py", str(sweep), f"output={tmp_path / 't.csv'}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 runs (3 complete, 1 incomplete)" in proc.stdout and (tmp_path / "t.csv").exists()
    proc = script("collect.py", str(tmp_path / "missing"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such directory" in proc.stderr



def test_collect_script_usage_errors(tmp_path, capsys):
    import runpy

    main = runpy.run_path(str(ROOT / "scripts" / "collect.py"), run_name="collect")["main"]
    for argv in ([], [str(tmp_path), str(tmp_path)], [str(tmp_path), "out=x.csv"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "usage: python scripts/collect.py DIR" in err


@pytest.mark.slow  # ~40 s: two tiny training runs in parallel processes
def test_joblib_multirun_sweep_and_collect(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = script("train.py", "-m", "hydra/launcher=local", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep_dir}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    frame, path = collect(sweep_dir)
    assert len(frame) == 2 and set(frame["status"]) == {"ok"}
    assert sorted(frame["seed"]) == [0, 1] and set(frame["circuit"]) == {"rc"}
    assert set(frame["steps"]) == {5} and frame["nrmse_worst_overall"].notna().all()
    assert path.exists() and all((sweep_dir / r / "surrogate.pt").exists() for r in frame["run"])


# --------------------------------------------------------------------------------------------------
# DDP on 2 CPU processes


@pytest.mark.slow  # ~40 s: two gloo ranks, each with its own reference solve for validation
def test_ddp_two_cpu_processes(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    run = tmp_path / "run"
    steps = 6
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_probe.py"), "trainer=ddp", *TINY,
                           f"trainer.max_steps={steps}", "surrogate.checkpoint_every=3", f"hydra.run.dir={run}"],
                          cwd=tmp_path, env={**ENV, "NEUROSPICE_PROBE_DIR": str(probe)}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = {r: [json.loads(line) for line in (probe / f"batches_rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)}
    assert not (probe / "batches_rank2.jsonl").exists()
    for r, rows in ranks.items():
        assert [row["step"] for row in rows] == list(range(steps))  # every rank trained every step
        assert {row["world"] for row in rows} == {2} and {row["rank"] for row in rows} == {r}
    assert ranks[0][0]["pid"] != ranks[1][0]["pid"]                 # two processes
    for a, b in zip(ranks[0], ranks[1]):                             # each rank its own points
        assert a["designs"] != b["designs"] and a["t"] != b["t"]
    seen = [json.dumps([row["designs"], row["t"]]) for rows in ranks.values() for row in rows]
    assert len(set(seen)) == len(seen)                               # no batch drawn twice
    saves = [json.loads(line) for line in (probe / "saves.jsonl").read_text().splitlines()]
    assert len(saves) == 1 and saves[0]["local_rank"] == 0           # surrogate written once, by rank 0
    assert saves[0]["pid"] == ranks[0][0]["pid"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == steps
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == steps
    assert proc.stdout.count("steps=") == 1                          # one report, from rank 0


# --------------------------------------------------------------------------------------------------
# Optuna: worker processes sharing one study

WORKER = textwrap.dedent("""
    import json, os, sys, time
    import optuna
    from optimize.optuna_baseline import make_storage

    storage, worker, n, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    open(os.path.join(folder, f"ready{worker}"), "w").close()
    while not all(os.path.exists(os.path.join(folder, f"ready{w}")) for w in (0, 1)):
        time.sleep(0.01)                      # start together, so that the workers really interleave
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared", storage=make_storage(storage),
                              sampler=optuna.samplers.RandomSampler(seed=worker))

    def objective(trial):
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("pid", os.getpid())
        x = trial.suggest_float("x", -3.0, 3.0)
        time.sleep(0.03)
        return (x - 1.0) ** 2

    study.optimize(objective, n_trials=n)
    print(json.dumps({"worker": worker, "pid": os.getpid()}))
""")


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_optuna_worker_processes_share_one_study(tmp_path, kind):
    import optuna

    from optimize.optuna_baseline import make_storage

    storage = f"sqlite:///{tmp_path}/optuna.db" if kind == "sqlite" else f"journal:{tmp_path}/optuna.log"
    optuna.create_study(study_name="shared", storage=make_storage(storage), direction="minimize")
    requested = {0: 12, 1: 9}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, storage, str(w), str(n), str(tmp_path)], cwd=ROOT,
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w, n in requested.items()]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    pids = {json.loads(out)["worker"]: json.loads(out)["pid"] for out, _ in outs}
    trials = optuna.load_study(study_name="shared", storage=make_storage(storage)).trials
    assert len(trials) == sum(requested.values())                       # none lost
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # distinct numbers, no gaps
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    by_worker = {w: [t.number for t in trials if t.user_attrs["worker"] == w] for w in requested}
    assert {w: len(v) for w, v in by_worker.items()} == requested        # each worker's own count
    assert all(t.user_attrs["pid"] == pids[t.user_attrs["worker"]] for t in trials)
    a, b = by_worker[0], by_worker[1]
    assert max(a) > min(b) and max(b) > min(a)                           # they ran concurrently
    print(f"\n{kind}: {len(trials)} trials = worker0 {len(a)} + worker1 {len(b)}; order "
          + "".join(str(t.user_attrs['worker']) for t in sorted(trials, key=lambda t: t.number)))


OPTUNA_SEARCH_WORKER = textwrap.dedent("""
    import json, sys
    from optimize.evaluators import ReferenceEvaluator
    from optimize.optuna_baseline import optuna_search
    from optimize.tasks import load_task

    storage, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    task = load_task("rc_delay")
    res = optuna_search(task, ReferenceEvaluator(task.circuit, rtol=1e-4, points=601), n_trials=n, seed=seed,
                        storage=storage, study_name="rc-shared", stop_fraction=0.0, n_startup_trials=n)
    print(json.dumps({"calls": res.calls, "trials": len(res.history), **res.extra}))
""")


def test_optuna_search_workers_on_a_journal_file(tmp_path):
    """The optimize.optuna_baseline entry point itself, rc_delay on the reference solver: two
    processes with the same storage and study name add up to one study."""
    import optuna

    from optimize.optuna_baseline import make_storage

    storage = f"journal:{tmp_path}/rc.log"
    requested = (4, 3)
    procs = [subprocess.Popen([sys.executable, "-c", OPTUNA_SEARCH_WORKER, storage, str(seed), str(n)], cwd=ROOT,
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed, n in enumerate(requested)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["calls"] for r in results] == list(requested) == [r["trials"] for r in results]
    trials = optuna.load_study(study_name="rc-shared", storage=make_storage(storage)).trials
    assert len(trials) == sum(requested) and sorted(t.number for t in trials) == list(range(sum(requested)))
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["value"] > 0 for t in trials)
    assert max(r["trials_in_study"] for r in results) == sum(requested)  # the later one saw all trials
