"""Refit a window's time-rate head to the speed at which the circuit equations traverse its shape."""

from __future__ import annotations

import logging
import math

import torch

from surrogate.callbacks.window_schedule import WindowPhase
from surrogate.models import LimitCycleSurrogate
from surrogate.module import PinnModule
from surrogate.nets import LegendreHead
from surrogate.rates import fit_log_head, orbit_rates, window_rate_factors
from surrogate.sampling import PointSet

__all__ = ["RateProjection"]

log = logging.getLogger(__name__)

#: a projection that leaves the window's L-BFGS residual above this factor of the pre-projection
#: value is undone (a good ring5 cycle projected after the fact: 0.87-0.92x; a collapsed one: 4.1e-2)
PROJECTION_SLACK = 1.5


class RateProjection(WindowPhase):
    """After each L-BFGS of a window with a time-rate head (a limit cycle's F(p), a start-up
    window's g(p)), refit the head to the speeds at which the circuit equations traverse the
    learned shape (`surrogate.rates`) on `designs` fresh designs; undone when it raises the
    window's residual."""

    def __init__(self, designs: int = 512):
        self.designs = int(designs)

    def after_lbfgs(self, schedule, module: PinnModule, window: int, points: PointSet,
                    history: list[float]) -> list[float]:
        head = module.model.rate_head(window)
        if not isinstance(head, LegendreHead):
            return history
        kept = {k: v.clone() for k, v in head.state_dict().items()}
        if not self.project(module, window):
            return history
        t, designs, starts = points
        with torch.no_grad():
            projected = float(module.loss_terms(t, designs, window, starts)["residual"])
        if projected > PROJECTION_SLACK * history[-1]:  # a collapsed shape has no meaningful speed
            log.warning("window %d: the rate projection raised the residual %.3g -> %.3g; rate kept",
                        window, history[-1], projected)
            head.load_state_dict(kept)
            return history
        return history + [projected]

    def project(self, module: PinnModule, window: int) -> bool:
        """Refit the window's rate head; False (head kept) when a shape has no positive speed."""
        model = module.model
        head = model.rate_head(window)
        P = module.sampler.designs(model, self.designs, int(module.hparams.seed) * 31 + 7_717 + window, window)
        u = model.circuit.space.to_unit(P).to(torch.float64)
        starts = module.window_start_states(P, window)
        with torch.no_grad():
            before = head(u.to(head.linear.weight.dtype)).squeeze(1).to(torch.float64)
        if isinstance(model, LimitCycleSurrogate) and window == model.cycle_window:
            speeds = orbit_rates(model, P, starts, decay=model.distil_decay)  # cycles per second
            target = torch.log(speeds * float(model.hparams_net["period"]) / model.time_factor(P))
        else:
            speeds = window_rate_factors(model, window, P, starts)
            target = before + torch.log(speeds)
        if not bool(torch.isfinite(speeds).all()) or not bool((speeds > 0).all()):
            log.warning("window %d: the learned shape has no positive speed on every design; rate head kept", window)
            return False
        gap = fit_log_head(head, u, target)
        log.info("window %d: time rate projected onto the shape's traversal speed (moved up to %.3g %%, "
                 "fit within %.2g %%)", window, 100 * math.expm1(float((target - before).abs().max())), 100 * gap)
        return True
