"""Collocation points in (t, p), drawn fresh for every batch (Sobol designs, stratified times)."""

from __future__ import annotations

import hashlib
from typing import Callable

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from circuits.params import ParamSpace

__all__ = ["CollocationDataset", "CollocationDataModule", "farthest_points", "sample_times"]


def farthest_points(z: Tensor, k: int) -> Tensor:
    """Indices of k rows of z (N, F) chosen greedily, each the farthest from those already chosen
    (starting with row 0): a space-filling subset that keeps rare, isolated rows."""
    if not 0 < k <= z.shape[0]:
        raise ValueError(f"farthest_points: cannot choose {k} of {z.shape[0]} rows")
    chosen = [0]
    gap = (z - z[0]).pow(2).sum(dim=1)
    for _ in range(k - 1):
        i = int(gap.argmax())
        chosen.append(i)
        gap = torch.minimum(gap, (z - z[i]).pow(2).sum(dim=1))
    return torch.tensor(chosen)


def sample_times(n: int, tstop: float, breakpoints: list[float], fraction: float,
                 generator: torch.Generator) -> Tensor:
    """n times in [0, tstop]: stratified uniform, plus `fraction` of them just after source corners."""
    n_bp = int(round(fraction * n)) if breakpoints else 0
    n_uni = n - n_bp
    strata = (torch.arange(n_uni, dtype=torch.float64) + torch.rand(n_uni, generator=generator,
                                                                    dtype=torch.float64)) / max(n_uni, 1)
    times = [strata * tstop]
    if n_bp:
        bp = torch.tensor(breakpoints, dtype=torch.float64)
        pick = bp[torch.randint(len(breakpoints), (n_bp,), generator=generator)]
        width = 0.03 * tstop
        times.append(torch.clamp(pick + width * torch.rand(n_bp, generator=generator, dtype=torch.float64)
                                 ** 2, max=tstop))
    return torch.cat(times)


class CollocationDataset(IterableDataset):
    """Yields ``(t (D·T,), designs (D, P))``: D designs, each at T times (rows grouped by design).

    Batch g (counted over the whole run) is a pure function of (seed, rank, worker, g): each DDP
    rank draws its own points, and a run resumed from a checkpoint at step N continues with batch N,
    exactly as the uninterrupted run (``start`` gives the index of the next batch: the trainer's
    global step; without it the epochs are counted here).
    """

    def __init__(self, space: ParamSpace, tstop: float, *, designs: int, times: int, batches: int,
                 fixed_params: bool, breakpoints: list[float], breakpoint_fraction: float, seed: int,
                 rank: int = 0, start: Callable[[], int] | None = None, design_margin: float = 0.0):
        super().__init__()
        self.design_margin = design_margin
        self.space, self.tstop = space, tstop
        self.designs, self.times, self.batches = designs, times, batches
        self.fixed_params, self.breakpoints = fixed_params, breakpoints
        self.breakpoint_fraction, self.seed, self.rank = breakpoint_fraction, seed, rank
        self.start = start
        self.epoch = 0

    def __len__(self) -> int:
        return self.batches

    def batch_seed(self, g: int, worker: int = 0) -> int:
        """Seed of global batch g (63 bits of a hash of seed, rank, worker, g)."""
        key = f"{self.seed},{self.rank},{worker},{g}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        g0 = int(self.start()) if self.start is not None else self.epoch * self.batches
        self.epoch += 1
        for g in range(g0, g0 + self.batches - g0 % self.batches):  # to the end of the current epoch
            seed = self.batch_seed(g, worker)
            gen = torch.Generator().manual_seed(seed)
            if self.fixed_params or self.space.dim == 0:
                P = self.space.nominal_vector().unsqueeze(0).expand(self.designs, -1).clone()
            else:
                P = self.space.sample_sobol(self.designs, seed=seed % 2**31, margin=self.design_margin)
            t = torch.cat([sample_times(self.times, self.tstop, self.breakpoints, self.breakpoint_fraction, gen)
                           for _ in range(self.designs)])
            yield t, P


class _ResumableLoader(DataLoader):
    """A DataLoader Lightning treats as resumable mid-epoch: the dataset restarts at the trainer's
    restored global step by itself, so there is no state to save."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CollocationDataModule(L.LightningDataModule):
    """Wraps `CollocationDataset`; validation is driven by the module's held-out designs."""

    def __init__(self, space: ParamSpace, tstop: float, breakpoints: list[float], *, designs: int = 32,
                 times: int = 64, batches_per_epoch: int = 100, fixed_params: bool = False,
                 breakpoint_fraction: float = 0.2, seed: int = 0, design_margin: float = 0.0):
        super().__init__()
        self.kw = dict(designs=designs, times=times, batches=batches_per_epoch, fixed_params=fixed_params,
                       breakpoints=breakpoints, breakpoint_fraction=breakpoint_fraction, seed=seed,
                       design_margin=design_margin)
        self.space, self.tstop = space, tstop

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        if trainer is None:
            return DataLoader(CollocationDataset(self.space, self.tstop, **self.kw), batch_size=None)
        dataset = CollocationDataset(self.space, self.tstop, rank=trainer.global_rank,
                                     start=lambda: trainer.global_step, **self.kw)
        return _ResumableLoader(dataset, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=None)
