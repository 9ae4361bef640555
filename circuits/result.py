"""What a transient returns (`TransientResult`) and its optional progress bar."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["TransientResult", "progress_bar"]


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
    def update(self, _: float) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, tstop: float):
    """A tqdm bar over simulated time when enabled, else a no-op with the same methods."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    bar = tqdm(total=tstop, unit="s", unit_scale=True, desc="transient", leave=False)

    class _Bar:
        def update(self, h: float) -> None:
            bar.update(h)

        def close(self) -> None:
            bar.close()

    return _Bar()
