"""Tests' way into a training run's parts: the module, its window schedule and callbacks from a config."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


def compose_train(overrides: list[str]):
    """The train config with these overrides."""
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def build_run(overrides: list[str], deadline: float = 0.0):
    """(module, window schedule, callbacks) of a manual-recipe run, as `run_train` builds them."""
    from surrogate.callbacks import WindowPhase, WindowSchedule
    from surrogate.train import build, circuit_config

    cfg = compose_train(["recipe=manual", *overrides])
    module, _, callbacks = build(cfg, circuit_config(cfg), deadline)
    schedule = next(cb for cb in callbacks if isinstance(cb, WindowSchedule))
    schedule.phases = [cb for cb in callbacks if isinstance(cb, WindowPhase)]
    return module, schedule, callbacks
