"""What a transient returns (`TransientResult`) and its optional progress bar."""

from __future__ import annotations

import contextvars
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from torch import Tensor

from circuits.errors import ConvergenceError

__all__ = ["TransientResult", "progress_bar", "step_budget", "check_breakpoints", "check_step_ceiling",
           "DEFAULT_MAX_STEPS"]


@dataclass
class TransientResult:
    """Time points, solution, unknown names and solver statistics.

    Shared steps: t (T,), x (B, T, n), counts None.  Per-design steps: t (B, T_max) and
    x (B, T_max, n), design b's own grid being t[b, :counts[b]]; the rest repeats its last point.
    """

    t: Tensor
    x: Tensor
    names: list[str]
    stats: dict = field(default_factory=dict)
    breakpoints: list[float] = field(default_factory=list)
    counts: Tensor | None = None
    steps_mode: str = "shared"


class _NoBar:
    watching = False  # nothing to show and no budget: the loops skip their updates

    def update(self, _: float, steps: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


#: steps one transient may take when a script sets no solver.max_steps (the shipped circuits take
#: 1e3-1e5; a million at ~20-50 us each is under a minute: a window far too long for its events)
DEFAULT_MAX_STEPS = 1_000_000

#: seconds a transient runs before its progress bar appears (a short run prints nothing)
PROGRESS_AFTER_S = 3.0


@dataclass
class _Watch:
    max_steps: int | None
    progress: bool


_WATCH: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("transient_watch", default=None)


@contextmanager
def step_budget(max_steps: int | None = DEFAULT_MAX_STEPS, progress: bool = True) -> Iterator[None]:
    """Within the block every transient stops with a one-line ConvergenceError after ``max_steps``
    steps (None: no limit) and shows a progress bar once it has run `PROGRESS_AFTER_S`."""
    token = _WATCH.set(_Watch(None if max_steps is None else int(max_steps), bool(progress)))
    try:
        yield
    finally:
        _WATCH.reset(token)


#: breakpoints one source may put in a window without a step budget set (each is a step; memory)
MAX_BREAKPOINTS = 10 * DEFAULT_MAX_STEPS


def _budget() -> int:
    """The step budget in force: the enclosing `step_budget`'s, else MAX_BREAKPOINTS."""
    watch = _WATCH.get()
    return watch.max_steps if watch is not None and watch.max_steps is not None else MAX_BREAKPOINTS


def check_breakpoints(count: float, tstop: float, what: str) -> None:
    """ConvergenceError before a source's ``count`` corners are listed if they alone exceed the budget."""
    limit = _budget()
    if count > limit:
        raise ConvergenceError(f"{what}: {count:.3g} corners in the {tstop:.4g} s window, each a solver step, "
                               f"beyond the step budget solver.max_steps={limit}: shorten the .tran window "
                               "or raise solver.max_steps")


def check_step_ceiling(hmax: float, tstop: float) -> None:
    """ConvergenceError before the first step if the step ceiling alone needs more steps than the budget."""
    limit = _budget()
    if tstop / hmax > limit * (1 + 1e-9):  # (a window of exactly max_steps ceilings, up to rounding)
        raise ConvergenceError(f"the step ceiling {hmax:.3g} s needs {tstop / hmax:.3g} steps for the {tstop:.4g} s "
                               f"window, beyond the step budget solver.max_steps={limit}: shorten the .tran window, "
                               "raise its tstep (or tmax) or raise solver.max_steps")


def progress_bar(enabled: bool, tstop: float):
    """The transient loop's step counter: a tqdm bar over simulated time when enabled (or, inside
    `step_budget`, once the run is slow), and the step budget's check."""
    watch = _WATCH.get()
    if not enabled and watch is None:
        return _NoBar()
    return _Bar(tstop, enabled, watch)


class _Bar:
    """update(h, steps) once per accepted step or block of steps: advances the bar, spends the budget."""

    watching = True

    def __init__(self, tstop: float, enabled: bool, watch: _Watch | None):
        from tqdm.auto import tqdm

        show = enabled or (watch is not None and watch.progress)
        self.tstop, self.t, self.steps = tstop, 0.0, 0
        self.max_steps = watch.max_steps if watch is not None else None
        tty = sys.stderr.isatty()
        # a log file (no terminal) gets a line every 10 s, not a redraw every 0.1 s
        self.bar = tqdm(total=tstop, desc="transient", leave=False, disable=not show,
                        delay=0.0 if enabled else PROGRESS_AFTER_S, mininterval=0.1 if tty else 10.0,
                        bar_format="{desc}: {percentage:3.0f}% of the window|{bar}| [{elapsed}<{remaining}]")

    def update(self, h: float, steps: int = 1) -> None:
        self.bar.update(h)
        self.t += h
        self.steps += steps
        if self.max_steps is not None and self.steps > self.max_steps:
            self.bar.close()
            raise ConvergenceError(f"transient stopped after solver.max_steps={self.max_steps} steps at "
                                   f"t={self.t:.4g} s of {self.tstop:.4g} s ({100 * self.t / self.tstop:.2g} %): "
                                   f"shorten the .tran window or raise solver.max_steps")

    def close(self) -> None:
        self.bar.close()
