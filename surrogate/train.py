"""`run_train(cfg, outdir)`: train a PINN surrogate from a Hydra config; writes every artifact."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_train", "lbfgs_refine"]


def lbfgs_refine(module, steps: int, seed: int = 0) -> list[float]:
    """Float64 L-BFGS on a fixed collocation set drawn like training batches; returns the loss history."""
    if steps <= 0:
        return []
    from surrogate.data import CollocationDataset

    ds = CollocationDataset(module.circuit.space, module.circuit.tstop, designs=module.dm_kw["designs"],
                            times=module.dm_kw["times"], batches=1, fixed_params=module.dm_kw["fixed_params"],
                            breakpoints=module.dm_kw["breakpoints"],
                            breakpoint_fraction=module.dm_kw["breakpoint_fraction"], seed=seed + 99)
    t, designs = next(iter(ds))
    module.model.set_net_dtype(torch.float64)  # L-BFGS made no progress in float32
    opt = torch.optim.LBFGS(module.model.net.parameters(), lr=1.0, max_iter=steps, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)
    history: list[float] = []

    def closure():
        opt.zero_grad()
        terms = module.loss_terms(t, designs)
        loss = terms["residual"]
        loss.backward()
        history.append(float(loss))
        return loss

    opt.step(closure)
    return history


def run_train(cfg, outdir: str | Path) -> dict[str, Any]:
    """Train, validate, save `surrogate.pt`, `metrics.json`, `waveforms.png`, `loss.png` in outdir."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from omegaconf import OmegaConf

    from circuits import io
    from surrogate.api import save_surrogate
    from surrogate.data import CollocationDataModule
    from surrogate.module import PinnModule
    from surrogate.report import plot_loss, plot_waveforms

    outdir = Path(outdir)
    # batches are generated in-process (no workers), so Lightning's length caveat does not apply
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
    L.seed_everything(int(cfg.seed), workers=True)
    circuit_cfg = OmegaConf.to_container(cfg.circuit, resolve=True)
    s = cfg.surrogate
    max_steps = int(cfg.trainer.max_steps)
    module = PinnModule(circuit_cfg, dict(OmegaConf.to_container(cfg.model, resolve=True)), lr=float(s.lr),
                        causal_eps=float(s.causal_eps), val_designs=int(s.val_designs),
                        val_points=int(s.val_points), seed=int(cfg.seed), fixed_params=bool(s.fixed_params),
                        max_steps=max_steps)
    breakpoints = module.model.physics.bind(None).breakpoints()
    dm_kw = dict(designs=int(s.designs_per_batch), times=int(s.times_per_design),
                 fixed_params=bool(s.fixed_params), breakpoints=breakpoints,
                 breakpoint_fraction=float(s.breakpoint_fraction))
    module.dm_kw = dm_kw
    dm = CollocationDataModule(module.circuit.space, module.circuit.tstop, batches_per_epoch=int(s.batches_per_epoch),
                               seed=int(cfg.seed), **dm_kw)
    trainer_kw = OmegaConf.to_container(cfg.trainer, resolve=True)
    ckpt = ModelCheckpoint(dirpath=outdir / "checkpoints", save_last=True, every_n_train_steps=int(s.checkpoint_every))
    callbacks = [ckpt]
    if trainer_kw.get("enable_progress_bar", True):
        from lightning.pytorch.callbacks import RichProgressBar
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(default_root_dir=str(outdir), logger=CSVLogger(str(outdir), name="logs"),
                        callbacks=callbacks, inference_mode=False, enable_model_summary=False, **trainer_kw)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    adam_s = time.perf_counter() - t0
    lbfgs = lbfgs_refine(module, int(s.lbfgs_steps), int(cfg.seed))
    train_s = time.perf_counter() - t0
    metrics = module.evaluate_designs()
    metrics.update({"circuit": module.circuit.name, "train_time_s": train_s, "adam_time_s": adam_s,
                    "steps": int(trainer.global_step), "lbfgs_evaluations": len(lbfgs),
                    "fixed_params": bool(s.fixed_params)})
    save_surrogate(module.model, outdir / "surrogate.pt", metrics)
    io.write_json(outdir / "metrics.json", metrics)
    io.save_figure(outdir / "waveforms.png", plot_waveforms(module, metrics))
    fig = plot_loss(Path(trainer.logger.log_dir) / "metrics.csv", lbfgs)
    if fig is not None:
        io.save_figure(outdir / "loss.png", fig)
    return metrics
