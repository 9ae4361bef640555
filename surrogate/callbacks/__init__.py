"""Training phases as Lightning callbacks (see surrogate/callbacks/window_schedule.py)."""

from surrogate.callbacks.limit_cycle import CycleDistillation
from surrogate.callbacks.rate_projection import RateProjection
from surrogate.callbacks.stall_retry import StallRetry, stalled_windows
from surrogate.callbacks.train_to_target import TrainToTarget
from surrogate.callbacks.window_schedule import WindowPhase, WindowSchedule

__all__ = ["CycleDistillation", "RateProjection", "StallRetry", "TrainToTarget", "WindowPhase", "WindowSchedule",
           "stalled_windows"]
