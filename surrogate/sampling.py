"""Where the residual is evaluated: collocation designs, times and start states for one time window.

`WindowSampler` draws, for the window being trained, the designs (the nominal one for a
fixed-design run; else Sobol designs from a pool whose initial states are solved once; for later
windows of a flow-map model, the designs that cover (design, start state); for a warped model,
designs whose warped horizon reaches the window), times clustered after the source corners in the
window, and the fixed point sets of L-BFGS (optionally residual-adaptive).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from circuits.params import ParamSpace
from surrogate.data import farthest_points, sample_times
from surrogate.models import Surrogate

__all__ = ["WindowSampler", "PointSet"]

#: (times (N,), designs (N, P), start states (N, n)): a window's collocation points
PointSet = tuple[Tensor, Tensor, Tensor]


class WindowSampler:
    """Collocation points of one time window of a surrogate (see module docstring)."""

    def __init__(self, space: ParamSpace, *, seed: int = 0, fixed_params: bool = False,
                 design_margin: float = 0.0, design_pool: int = 0, start_cover: int = 0,
                 breakpoint_fraction: float = 0.2, designs_per_batch: int = 32, times_per_design: int = 64,
                 lbfgs_designs: int | None = None, lbfgs_times: int | None = None, lbfgs_adaptive: float = 0.0):
        self.space, self.seed, self.fixed_params = space, int(seed), bool(fixed_params)
        self.design_margin, self.pool_size, self.start_cover = float(design_margin), int(design_pool), int(start_cover)
        self.breakpoint_fraction = float(breakpoint_fraction)
        self.designs_per_batch, self.times_per_design = int(designs_per_batch), int(times_per_design)
        # the fixed L-BFGS set: by default as many designs and times as an Adam batch
        self.lbfgs_designs = int(lbfgs_designs or designs_per_batch)
        self.lbfgs_times = int(lbfgs_times or times_per_design)
        self.lbfgs_adaptive = float(lbfgs_adaptive)
        self._pool: tuple[Tensor, Tensor, dict[bytes, int]] | None = None

    # -- times ------------------------------------------------------------------------------------

    def window_times(self, model: Surrogate, n: int, designs: int, window: int, seed: int) -> Tensor:
        """Collocation times (designs·n,) inside one window (in the model's network time), clustered
        after the source corners in it."""
        t0, t1 = float(model.edges[window]), float(model.edges[window + 1])
        corners = [b - t0 for b in model.physics.bind(None).breakpoints() if t0 <= b < t1]
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([t0 + sample_times(n, t1 - t0, corners, self.breakpoint_fraction, gen)
                          for _ in range(designs)])

    # -- start states -----------------------------------------------------------------------------

    def window_start_states(self, model: Surrogate, designs: Tensor, window: int) -> Tensor:
        """State (D, n) of each design at the start of a window (no graph: earlier windows are frozen)."""
        with torch.no_grad():
            x0 = self.initial_states(model, designs)
            return model.window_starts(designs, x0, upto=window + 1)[window] if window else x0

    def initial_states(self, model: Surrogate, designs: Tensor) -> Tensor:
        """x(0, p) (D, n) of each design (no graph); designs drawn from the design pool are looked up,
        not solved again (a DC solve of the candidates was half of every Adam step)."""
        pool = self._design_pool(model)
        if pool is None:
            return model.physics.initial_state(model.physics.bind(designs))
        index = [pool[2].get(row.numpy().tobytes()) for row in designs]
        found = torch.tensor([i is not None for i in index])
        x0 = pool[1].new_empty(len(designs), pool[1].shape[1])
        if bool(found.any()):
            x0[found] = pool[1][torch.tensor([i for i in index if i is not None])]
        if not bool(found.all()):  # the box's corners (and any design from elsewhere): solved here
            x0[~found] = model.physics.initial_state(model.physics.bind(designs[~found]))
        return x0

    def _design_pool(self, model: Surrogate) -> tuple[Tensor, Tensor, dict[bytes, int]] | None:
        """(designs, their initial states, row -> index) of the `design_pool` Sobol designs that
        collocation designs are drawn from; None without a pool."""
        if self.pool_size <= 0:
            return None
        if self._pool is None:
            P = self.space.sample_sobol(self.pool_size, seed=self.seed * 31 + 55_441, margin=self.design_margin)
            with torch.no_grad():
                x0 = model.physics.initial_state(model.physics.bind(P))
            self._pool = (P, x0, {row.numpy().tobytes(): k for k, row in enumerate(P)})
        return self._pool

    # -- designs ----------------------------------------------------------------------------------

    def sobol(self, model: Surrogate, n: int, seed: int) -> Tensor:
        """n designs: drawn from the design pool when there is one, else Sobol with this seed."""
        pool = self._design_pool(model)
        if pool is None:
            return self.space.sample_sobol(n, seed=seed, margin=self.design_margin)
        pick = torch.randperm(len(pool[0]), generator=torch.Generator().manual_seed(seed))[:n]
        return pool[0][pick]

    def covers_start_states(self, model: Surrogate) -> bool:
        """Whether later windows draw designs that cover (p, start state) (`start_cover` > 1 and
        start states as network inputs)."""
        return self.start_cover > 1 and len(model.state_features) > 0

    def corners(self, D: int, seed: int) -> Tensor:
        """The box's corners to put among D collocation designs: at most an eighth of them (all
        2^P when they fit, else a seeded draw), none below 16 designs.

        Sobol designs leave the corners to extrapolation, and there the error was largest: amp's
        (rd, w, cl) = (high, high, low) corner at 2.4-8.7 % NRMSE in three runs whose 257
        uniform held-out designs were all under 0.64 %."""
        room = D // 8
        return self.space.corners(limit=room if room >= 2 else 0, seed=seed)

    def designs(self, model: Surrogate, D: int, seed: int, window: int = 0) -> Tensor:
        """D collocation designs for a window (see module docstring), the box's corners among them."""
        if self.fixed_params or self.space.dim == 0:
            return self.space.nominal_vector().unsqueeze(0).expand(D, -1).clone()
        if window > 0 and self.covers_start_states(model):
            return self._covering_designs(model, D, self.start_cover * D, seed, window)
        corners = self.corners(D, seed)
        if window == 0 or not model.warped_time:
            return torch.cat([corners, self.sobol(model, D - len(corners), seed)])
        candidates = torch.cat([corners, self.sobol(model, 8 * D, seed)])
        tstop = torch.full((len(candidates),), model.circuit.tstop, dtype=torch.float64)
        reach = model.warp(tstop, candidates)[0]  # network time at tstop
        kept = candidates[reach > float(model.edges[window])]
        if not len(kept):  # the horizon's largest factor: the fastest corner of the box
            kept = candidates[reach.argmax()].unsqueeze(0)
        return kept[torch.arange(D) % len(kept)]

    def _covering_designs(self, model: Surrogate, D: int, candidates: int, seed: int, window: int) -> Tensor:
        """D of `candidates` Sobol designs chosen by farthest-point sampling in (u, scaled start state).

        Sobol designs cover the box of p evenly, but a window's network also sees its start state,
        and p -> start state crowds most designs into one class: in FeRAM's 4.5-6 ns window the
        few designs still unswitched at the coercive bottleneck were 7 % of the points, and the
        network switched them all."""
        P = self.sobol(model, candidates, seed)
        sf = model.state_features
        starts = self.window_start_states(model, P, window)[:, sf] / model.physics.layout.x_scale[sf]
        return P[farthest_points(torch.cat([self.space.to_unit(P), starts], dim=1), D)]

    # -- batches ----------------------------------------------------------------------------------

    def window_batch(self, model: Surrogate, window: int, t: Tensor, designs: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """One Adam batch (times (D·T,), designs (D, P)) for a window, from the data module's batch
        over the whole transient (t, designs): one unwarped window takes it as it is; otherwise
        its times are redrawn inside the window and, for later windows of a warped or
        start-state-covering model, its designs too (`designs`)."""
        if model.windows == 1 and not model.warped_time:
            return t, designs
        D = designs.shape[0]
        t = self.window_times(model, t.shape[0] // D, D, window, seed=seed)
        if window and (model.warped_time or self.covers_start_states(model)):
            designs = self.designs(model, D, seed % 2**31, window)
        return t, designs

    def adam_batch(self, model: Surrogate, window: int, seed: int) -> tuple[Tensor, Tensor]:
        """(times (D·T,), designs (D, P)) of one Adam step in a window outside the trainer's loop."""
        D, T = self.designs_per_batch, self.times_per_design
        return self.window_times(model, T, D, window, seed=seed), self.designs(model, D, seed, window)

    def lbfgs_points(self, model: Surrogate, window: int, seed: int,
                     residuals: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None) -> PointSet:
        """The fixed L-BFGS set of one window: (times (N,), designs (N, P), start states (N, n)).

        With `lbfgs_adaptive` = a > 0 (and `residuals`, the squared residual at points), a fraction a
        of the points are the largest-residual ones of 4x as many candidates under the network
        Adam left (residual-based adaptive refinement, as in Lu et al. 2021 / Wu et al. 2023)."""
        D, T = self.lbfgs_designs, self.lbfgs_times
        t, P, starts = self._points(model, window, D, T, seed)
        if self.lbfgs_adaptive <= 0 or residuals is None:
            return t, P, starts
        n_top = int(self.lbfgs_adaptive * D * T)
        cand_t, cand_P, cand_starts = self._points(model, window, 4 * D, T, seed + 104_729)
        with torch.no_grad():
            r2 = torch.cat([residuals(ct, cp, cs) for ct, cp, cs in
                            zip(cand_t.split(8192), cand_P.split(8192), cand_starts.split(8192))])
        top = r2.topk(n_top).indices
        keep = torch.arange(D * T - n_top)
        return (torch.cat([t[keep], cand_t[top]]), torch.cat([P[keep], cand_P[top]]),
                torch.cat([starts[keep], cand_starts[top]]))

    def _points(self, model: Surrogate, window: int, D: int, T: int, seed: int) -> PointSet:
        """D designs × T times in a window, rows grouped by design, with their start states."""
        designs = self.designs(model, D, seed, window)
        t = self.window_times(model, T, D, window, seed=seed)
        starts = self.window_start_states(model, designs, window).repeat_interleave(T, dim=0)
        return t, designs.repeat_interleave(T, dim=0), starts
