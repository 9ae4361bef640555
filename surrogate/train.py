"""`run_train(cfg, outdir)`: train a PINN surrogate from a Hydra config; writes every artifact."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_train", "apply_recipe"]

log = logging.getLogger(__name__)

#: share of the budget left after planning that the scheduled windows get; the target loop the rest
FIRST_PASS_SHARE = 0.5

#: L-BFGS seconds per window in the first pass (a simple circuit meets its target early; the target
#: loop gives the windows that miss it more)
WINDOW_ALLOWANCE_S = 60.0

#: Sobol designs (with their initial states, solved once) that collocation designs are drawn from
DESIGN_POOL = 8192

#: Adam steps per window before its L-BFGS (the automatic recipe)
ADAM_STEPS_PER_WINDOW = 300


def circuit_config(cfg) -> dict[str, Any]:
    """The circuit to train: `netlist=PATH` with `space.NAME=[LOW,HIGH(,log)]` and `outputs=[...]`,
    else the `circuit` config group."""
    from omegaconf import OmegaConf

    from circuits.circuit import netlist_config

    if cfg.get("netlist"):
        space = OmegaConf.to_container(cfg.space, resolve=True) if cfg.get("space") else {}
        outputs = OmegaConf.to_container(cfg.outputs, resolve=True) if cfg.get("outputs") else None
        return netlist_config(cfg.netlist, space, outputs)
    return OmegaConf.to_container(cfg.circuit, resolve=True)


def apply_recipe(cfg, circuit_cfg: dict, budget_s: float, began: float):
    """The config with the automatic recipe's model layout and budgets filled in (`surrogate.recipe`),
    and the recipe itself."""
    from omegaconf import OmegaConf

    from circuits.circuit import circuit_from_config
    from surrogate.recipe import max_windows_for, plan

    circuit = circuit_from_config(circuit_cfg, source=f"circuit={circuit_cfg.get('name')}")
    recipe = plan(circuit, fixed_params=bool(cfg.surrogate.fixed_params),
                  max_windows=max_windows_for(budget_s, FIRST_PASS_SHARE))
    for line in recipe.reasons:
        log.info("recipe: %s", line)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in recipe.model.items():
        cfg.model[key] = value
    oscillator = recipe.oscillator
    cfg.surrogate.update({"design_margin": 0.1, "lbfgs_steps": 100_000, "retry_factor": 30.0,
                          "lbfgs_designs": 128 if oscillator else 512, "lbfgs_times": 32 if oscillator else 4,
                          "designs_per_batch": 32, "times_per_design": 32, "val_points": 1001, "val_designs": 64,
                          "design_pool": DESIGN_POOL,
                          **recipe.training})
    cfg.trainer.max_steps = ADAM_STEPS_PER_WINDOW * recipe.windows
    log.info("recipe: planned in %.0f s of a %.0f s budget", time.perf_counter() - began, budget_s)
    return cfg, recipe


def run_train(cfg, outdir: str | Path) -> dict[str, Any]:
    """Train, validate, save `surrogate.pt`, `metrics.json`, `waveforms.png`, `loss.png` in outdir.

    Under DDP every rank trains; only rank 0 writes the outputs (other ranks return {})."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    from circuits import io
    from surrogate.api import save_surrogate
    from surrogate.checkpoint_io import AtomicCheckpointIO
    from surrogate.data import CollocationDataModule
    from surrogate.launch import check_ddp_launch, interrupted
    from surrogate.module import CYCLE_ALLOWANCE, STALLED_FACTOR, PinnModule, stalled_windows
    from surrogate.report import plot_loss, plot_waveforms

    from surrogate.target import TrainToTarget

    outdir = Path(outdir)
    began = time.perf_counter()
    # batches are generated in-process (no workers), so Lightning's length caveat does not apply
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
    check_ddp_launch(OmegaConf.to_container(cfg.trainer, resolve=True))  # before any expensive setup
    L.seed_everything(int(cfg.seed), workers=True)
    circuit_cfg = circuit_config(cfg)
    budget_s = 60.0 * float(cfg.surrogate.get("budget_min", 20.0))
    auto = str(cfg.get("recipe", "auto")) == "auto"
    recipe = None
    if auto:
        cfg, recipe = apply_recipe(cfg, circuit_cfg, budget_s, began)
    s = cfg.surrogate
    max_steps = int(cfg.trainer.max_steps)
    design_margin = float(s.get("design_margin", 0.0))
    module = PinnModule(circuit_cfg, dict(OmegaConf.to_container(cfg.model, resolve=True)), lr=float(s.lr),
                        causal_eps=float(s.causal_eps), val_designs=int(s.val_designs),
                        val_points=int(s.val_points), seed=int(cfg.seed), fixed_params=bool(s.fixed_params),
                        max_steps=max_steps, breakpoint_fraction=float(s.breakpoint_fraction),
                        lbfgs_steps=int(s.lbfgs_steps), lbfgs_designs=int(s.get("lbfgs_designs") or s.designs_per_batch),
                        lbfgs_times=int(s.get("lbfgs_times") or s.times_per_design),
                        retry_factor=float(s.get("retry_factor", 30.0)), designs_per_batch=int(s.designs_per_batch),
                        lbfgs_adaptive=float(s.get("lbfgs_adaptive", 0.0)),
                        times_per_design=int(s.times_per_design), design_margin=design_margin,
                        cycle_lbfgs_steps=int(s.get("cycle_lbfgs_steps", 0)),
                        start_cover=int(s.get("start_cover", 0)), lbfgs_seconds=0.0,
                        design_pool=int(s.get("design_pool", 0)))
    if auto:  # the first pass takes at most FIRST_PASS_SHARE of what is left; the target loop the rest
        heavy = module.windows + (CYCLE_ALLOWANCE - 1 if recipe.oscillator else 0)
        left = began + budget_s - time.perf_counter()
        module.hparams.lbfgs_seconds = min(WINDOW_ALLOWANCE_S, FIRST_PASS_SHARE * left / heavy)
    breakpoints = module.model.physics.bind(None).breakpoints()
    dm_kw = dict(designs=int(s.designs_per_batch), times=int(s.times_per_design),
                 fixed_params=bool(s.fixed_params), breakpoints=breakpoints,
                 breakpoint_fraction=float(s.breakpoint_fraction), design_margin=design_margin)
    dm = CollocationDataModule(module.circuit.space, module.circuit.tstop, batches_per_epoch=int(s.batches_per_epoch),
                               seed=int(cfg.seed), **dm_kw)
    trainer_kw = OmegaConf.to_container(cfg.trainer, resolve=True)
    ckpt = ModelCheckpoint(dirpath=outdir / "checkpoints", save_last=True, every_n_train_steps=int(s.checkpoint_every))
    callbacks = [ckpt]
    if trainer_kw.get("enable_progress_bar", True):
        from lightning.pytorch.callbacks import RichProgressBar
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(default_root_dir=str(outdir), logger=CSVLogger(str(outdir), name="logs"),
                        callbacks=callbacks, inference_mode=False, enable_model_summary=False,
                        plugins=[AtomicCheckpointIO()], **trainer_kw)
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:  # Lightning stops with exit status 0: make it a failure that says how to resume
        raise interrupted(trainer, outdir) from None
    adam_s = time.perf_counter() - t0
    if trainer.global_rank != 0:  # DDP: rank 0 finishes the run and writes every output file
        return {}
    module.refine_window(module.windows - 1)  # earlier windows were refined when training moved on
    target, target_median = float(s.get("target_nrmse", 0.01)), float(s.get("target_median_nrmse", 0.003))
    loop = TrainToTarget(target, began + budget_s if auto else 0.0, module.steps_per_window, target_median)
    metrics = loop.run(module)  # without the automatic recipe: the verdict only, no rounds
    lbfgs = module.lbfgs_history
    train_s = time.perf_counter() - t0
    stalled = stalled_windows(module.window_residuals)
    edges = module.model.edges
    for k in stalled:
        log.warning("window %d (%.4g-%.4g s) ended at L-BFGS residual %.3g, over %gx the median window's: "
                    "the waveform from there on may be off", k, float(edges[k]), float(edges[k + 1]),
                    module.window_residuals[k], STALLED_FACTOR)
    metrics.update({"circuit": module.circuit.name, "train_time_s": train_s, "adam_time_s": adam_s,
                    "steps": int(trainer.global_step), "lbfgs_evaluations": len(lbfgs),
                    "final_residual": lbfgs[-1] if lbfgs else None,
                    "window_residuals": list(module.window_residuals), "stalled_windows": stalled,
                    "fixed_params": bool(s.fixed_params), "total_time_s": time.perf_counter() - began,
                    "recipe": "auto" if auto else "manual",
                    "recipe_reasons": recipe.reasons if recipe else [],
                    "window_edges": [float(e) for e in module.model.edges]})
    save_surrogate(module.model, outdir / "surrogate.pt", metrics)
    io.write_json(outdir / "metrics.json", metrics)
    io.save_figure(outdir / "waveforms.png", plot_waveforms(module, metrics))
    fig = plot_loss(Path(trainer.logger.log_dir) / "metrics.csv", lbfgs)
    if fig is not None:
        io.save_figure(outdir / "loss.png", fig)
    return metrics
