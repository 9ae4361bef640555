"""`PlainSurrogate` (one network over the whole transient) and `WindowedSurrogate` (consecutive
windows in seconds, each network optionally seeing its window's start state)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from circuits.circuit import Circuit
from surrogate.models.base import Surrogate, SurrogateError
from surrogate.physics import Layout

__all__ = ["PlainSurrogate", "WindowedSurrogate", "MIN_WINDOW_SHARE", "MAX_WINDOWS"]

#: the shortest window a split may produce, as a share of the transient window
MIN_WINDOW_SHARE = 1 / 256

#: windows a model will not be split beyond
MAX_WINDOWS = 96


class PlainSurrogate(Surrogate):
    """One network over [0, tstop]."""

    kind = "plain"

    def __init__(self, circuit: Circuit, layout: Layout | None = None, **common: Any):
        common.pop("state_input", None)  # one window: its start state is x0(p), a function of p
        super().__init__(circuit, layout, **common)
        self._set_windows(torch.tensor([0.0, circuit.tstop], dtype=torch.float64))

    def can_split(self, k: int) -> bool:
        return _splittable(self, k)

    def split_window(self, k: int) -> "WindowedSurrogate":
        """A two-window model whose halves start from this network's weights."""
        mid = 0.5 * float(self.edges[0] + self.edges[1])
        model = WindowedSurrogate(self.circuit, self.physics.layout, window_edges=[mid], **self.config())
        _copy_into(self.nets[0], model.nets)
        return model


class WindowedSurrogate(Surrogate):
    """Consecutive windows with inner edges `window_edges` in seconds (or `windows` equal ones)."""

    kind = "windowed"

    def __init__(self, circuit: Circuit, layout: Layout | None = None, *, windows: int = 1,
                 window_edges: Sequence[float] | None = None, **common: Any):
        super().__init__(circuit, layout, **common)
        if window_edges is not None:  # explicit inner edges (s): short windows where the waveform is fast
            edges = torch.tensor([0.0, *[float(e) for e in window_edges], circuit.tstop], dtype=torch.float64)
            if not bool((edges[1:] > edges[:-1]).all()):
                raise SurrogateError(f"window_edges must increase strictly inside (0, tstop={circuit.tstop:g}), "
                                     f"got {list(window_edges)}")
        else:
            if int(windows) < 1:
                raise SurrogateError(f"windows must be >= 1, got {windows}")
            edges = torch.linspace(0.0, circuit.tstop, int(windows) + 1, dtype=torch.float64)
        self._set_windows(edges)

    def config(self) -> dict[str, Any]:
        return {**self.hparams_net, "window_edges": [float(e) for e in self.edges[1:-1]]}

    def can_split(self, k: int) -> bool:
        return _splittable(self, k)

    def split_window(self, k: int) -> "WindowedSurrogate":
        """This model, with window k split at its midpoint (both halves from window k's weights)."""
        t0, t1 = float(self.edges[k]), float(self.edges[k + 1])
        parent = self.nets[k]
        self.edges = torch.cat([self.edges[:k + 1], torch.tensor([0.5 * (t0 + t1)], dtype=torch.float64),
                                self.edges[k + 1:]])
        children = nn.ModuleList(self._window_net(j) for j in (k, k + 1))
        _copy_into(parent, children)
        self.nets = nn.ModuleList([*self.nets[:k], *children, *self.nets[k + 1:]])
        return self


def _splittable(model: Surrogate, k: int) -> bool:
    """Window k is long enough to halve and the model is under the window cap."""
    width = float(model.edges[k + 1] - model.edges[k])
    return width >= 2 * MIN_WINDOW_SHARE * model.circuit.tstop and model.windows < MAX_WINDOWS


def _copy_into(parent: nn.Module, children: nn.ModuleList) -> None:
    """Load a window network's weights into new window networks (each keeps its own corner buffer)."""
    state = {name: v for name, v in parent.state_dict().items() if name != "corners"}
    dtype = next(parent.parameters()).dtype
    for net in children:
        net.to(dtype)
        net.load_state_dict(state, strict=False)
