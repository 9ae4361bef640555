"""`Surrogate`: what every PINN surrogate shares - the output transform over consecutive time windows,
the chain of window start states, and prediction (batched, pointwise, as a DataFrame).

A variant (`PlainSurrogate`, `WindowedSurrogate`, `LimitCycleSurrogate`) decides the windows, the
networks in them and the time axis they run on; the training code talks to this interface only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from circuits.circuit import Circuit
from circuits.errors import NeuroSpiceError
from surrogate.fast_form import FastForm
from surrogate.nets import PinnNet
from surrogate.physics import CircuitPhysics, Layout

__all__ = ["Surrogate", "SurrogateError", "design_runs"]

INFERENCE_CHUNK = 32768  # points per no-grad pass of predict_batch


class SurrogateError(NeuroSpiceError):
    """A surrogate file is missing, corrupt or of another format, or a model option is invalid."""


def design_runs(P: Tensor) -> tuple[Tensor, Tensor]:
    """(first row of each run of equal consecutive rows, run index of every row) of P (N, P).

    Points come grouped by design, so per-design quantities are computed once per run, not per
    point (torch.unique(dim=0) cost 0.6 s on 32k rows)."""
    with torch.no_grad():
        new = torch.ones(P.shape[0], dtype=torch.bool)
        new[1:] = (P[1:] != P[:-1]).any(dim=1)
        return torch.nonzero(new).flatten(), new.cumsum(0) - 1


class Surrogate(nn.Module):
    """x(t, p) = x0(p) + τ·s·NN(τ, u) for differential unknowns, s·NN for algebraic ones, and the
    source value for nodes pinned by grounded voltage sources; one network per time window, each
    window starting where the previous one ends (τ: time within the window, u: unit-cube design)."""

    #: the name a surrogate file records for this variant (`surrogate.models.MODEL_KINDS`)
    kind: ClassVar[str] = ""
    #: whether the networks run on a per-design time axis w(t, p) rather than in seconds
    warped_time: ClassVar[bool] = False

    def __init__(self, circuit: Circuit, layout: Layout | None = None, *, width: int = 64, depth: int = 4,
                 fourier: int = 0, activation: str = "tanh", corner_features: bool = True,
                 dtype: str = "float64", row_scale: str = "jacobian", point_scale: bool = False,
                 state_input: bool = False,
                 corner_inputs: int = 0):
        super().__init__()
        self.circuit = circuit
        self.physics = CircuitPhysics(circuit, layout=layout, row_scale=row_scale)
        lay = self.physics.layout
        self.hparams_net: dict[str, Any] = {
            "width": int(width), "depth": int(depth), "fourier": int(fourier), "activation": activation,
            "corner_features": bool(corner_features), "dtype": dtype, "row_scale": row_scale,
            "point_scale": bool(point_scale),
            "state_input": bool(state_input), "corner_inputs": int(corner_inputs)}
        self.metrics: dict[str, Any] = {}
        #: separable stand-in used by predict_batch when present (`surrogate.fast_form`); None: the PINN
        self.fast_form: FastForm | None = None
        self._corners = self.physics.bind(None).breakpoints() if corner_features else []
        self.register_buffer("learned_idx", torch.nonzero(lay.learned).flatten())
        # state_input: each window's network also sees its start state (the differential unknowns,
        # scaled), so it learns a flow map from that state rather than each design's phase from p
        features = torch.nonzero(lay.learned & lay.differential).flatten() if state_input else []
        self.register_buffer("state_features", torch.as_tensor(features, dtype=torch.long))
        self.register_buffer("edges", torch.tensor([0.0, circuit.tstop], dtype=torch.float64))
        self.nets = nn.ModuleList()

    # -- layout -----------------------------------------------------------------------------------

    def _set_windows(self, edges: Tensor) -> None:
        """Window edges (K + 1,) on the network's time axis and a fresh network for each window."""
        self.edges = edges
        # every window gets the same inputs (a corner at τ = 2 is a zero feature), so a window's
        # network can start from its predecessor's weights; a window split in training keeps its
        # parent's input count, which `corner_inputs` remembers
        self.hparams_net["corner_inputs"] = max([len(self._local_corners(k)) for k in range(len(edges) - 1)]
                                                + [int(self.hparams_net["corner_inputs"])])
        self.nets = nn.ModuleList(self._window_net(k) for k in range(len(edges) - 1))
        self.set_net_dtype(getattr(torch, self.hparams_net["dtype"]))

    def _local_corners(self, k: int) -> list[float]:
        """Source corners strictly inside window k, in its window time τ ∈ (0, 1)."""
        t0, t1 = float(self.edges[k]), float(self.edges[k + 1])
        return [(b - t0) / (t1 - t0) for b in self._corners if t0 < b < t1]

    @property
    def n_inputs(self) -> int:
        """Non-time inputs of every window network: the unit design, then the scaled start state."""
        return self.circuit.space.dim + len(self.state_features)

    def _window_net(self, k: int, rate_degree: int = 0) -> PinnNet:
        """A fresh network for window k (its corners padded to `corner_inputs` inputs)."""
        h = self.hparams_net
        local = self._local_corners(k)
        local = local + [2.0] * (int(h["corner_inputs"]) - len(local))
        return PinnNet(self.n_inputs, len(self.learned_idx), int(h["width"]), int(h["depth"]), int(h["fourier"]),
                       str(h["activation"]), local, rate_degree=rate_degree, rate_params=self.circuit.space.dim)

    @property
    def windows(self) -> int:
        """Number of consecutive time windows, each with its own network (hard continuity between them)."""
        return len(self.nets)

    def set_net_dtype(self, dtype: torch.dtype) -> None:
        """Run the networks in float32 (fast Adam, inference) or float64 (L-BFGS); physics stays float64."""
        self.nets.to(dtype)
        self.hparams_net["dtype"] = str(dtype).removeprefix("torch.")

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model's layout (saved in a surrogate file)."""
        return dict(self.hparams_net)

    # -- what training asks of a variant (defaults: plain windows in seconds) --------------------

    def can_split(self, k: int) -> bool:
        """Whether window k may be split in two (plain windows in seconds only)."""
        return False

    def split_window(self, k: int) -> "Surrogate":
        """The model with window k split at its midpoint, both halves starting from its weights."""
        raise SurrogateError(f"{type(self).__name__}: windows cannot be split")

    def retrained_with(self, k: int) -> list[int]:
        """Windows to retrain whenever window k is (fitted to more of window k than its end states
        as an input can carry); none here: later windows follow a changed start state as a flow map."""
        return []

    def rate_head(self, k: int) -> nn.Module | None:
        """Window k's time-rate head (refitted to the circuit's traversal speed), if it has one."""
        return None

    def cost_weight(self, k: int) -> float:
        """Window k's share of training time relative to an ordinary window."""
        return 1.0

    def compatible(self, k: int, j: int) -> bool:
        """Whether window k's network can start from window j's weights (same architecture)."""
        return type(self.nets[k]) is type(self.nets[j])

    # -- time axis (identity here; `LimitCycleSurrogate` warps it) --------------------------------

    def window_of(self, w: Tensor) -> Tensor:
        """Window index of each network time; a time on an inner edge belongs to the later window."""
        return torch.bucketize(w, self.edges[1:-1], right=True)

    def time_factor(self, P: Tensor) -> Tensor:
        """s(p) (N,): the network's time runs at t·s(p) (all ones here)."""
        return torch.ones(P.shape[0], dtype=torch.float64)

    def warp(self, t: Tensor, P: Tensor, window: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Network time w (N,), dw/dt (N,) and window (N,) of physical times t (N,) for designs P (N, P)."""
        return t, torch.ones_like(t), (self.window_of(t) if window is None else window)

    def warp_grid(self, t: Tensor, P: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`warp` of times t (T,) for each design P (B, P): w, dw/dt and window, each (B, T)."""
        w = t.unsqueeze(0).repeat(P.shape[0], 1)
        return w, torch.ones_like(w), self.window_of(w)

    def unwarp(self, w: Tensor, P: Tensor, window: Tensor | int | None = None) -> Tensor:
        """Physical times t (N,) of network times w (N,) for designs P (N, P): the inverse of `warp`."""
        return w

    # -- evaluation -------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Names of all unknowns (``v(n1)``, ``i(vdd)``, ``n1.p`` ...)."""
        return self.physics.names

    def _learned(self, k: int, t: Tensor, u: Tensor, start: Tensor, with_rate: bool):
        """Learned unknowns (N, m) in window k (and d/dw, w the network time): start + τ·s·NN for
        differential ones."""
        t0, t1 = float(self.edges[k]), float(self.edges[k + 1])
        tau = ((t - t0) / (t1 - t0)).unsqueeze(1)
        net = self.nets[k]
        dtype = next(net.parameters()).dtype
        u = self._window_inputs(u, start)
        if with_rate:
            y, y_rate = net.forward_with_rate(tau.to(dtype), u.to(dtype))
            y, y_rate = y.to(torch.float64), y_rate.to(torch.float64)
        else:
            y, y_rate = net(tau.to(dtype), u.to(dtype)).to(torch.float64), None
        lay = self.physics.layout
        scale = lay.x_scale[self.learned_idx]
        diff = lay.differential[self.learned_idx]
        learned = torch.where(diff, start[:, self.learned_idx] + tau * scale * y, scale * y)
        if not with_rate:
            return learned, None
        rate = torch.where(diff, scale * (y + tau * y_rate), scale * y_rate) / (t1 - t0)
        return learned, rate

    def _window_inputs(self, u: Tensor, start: Tensor) -> Tensor:
        """A window network's non-time inputs: u, and the scaled start state with `state_input`."""
        if not len(self.state_features):
            return u
        sf = self.state_features
        return torch.cat([u, start[:, sf] / self.physics.layout.x_scale[sf]], dim=1)

    def window_starts(self, P: Tensor, x0: Tensor | None = None, upto: int | None = None) -> Tensor:
        """State at the start of every window (K, B, n) for designs P (B, P), chained from x0(p).

        Window k+1 starts where window k ends, so the waveform is continuous by construction."""
        upto = self.windows if upto is None else upto
        if x0 is None:
            x0 = self.physics.initial_state(self.physics.bind(P))
        u = self.circuit.space.to_unit(P)
        starts = [x0]
        for k in range(upto - 1):
            t_end = self.edges[k + 1].expand(P.shape[0])
            learned, _ = self._learned(k, t_end, u, starts[-1], with_rate=False)
            starts.append(starts[-1].index_copy(1, self.learned_idx, learned))
        return torch.stack(starts)

    def state(self, t: Tensor, P: Tensor, x0: Tensor | None = None, with_rate: bool = False,
              starts: Tensor | None = None, window: Tensor | int | None = None,
              warped: tuple[Tensor, Tensor] | None = None):
        """All unknowns x (N, n) at points (t (N,) seconds, P (N, P) designs); optionally dx/dt.

        x0 (N, n): the initial state of each point's design; starts (N, n): the state at the start
        of each point's window (computed from x0 when not given); window: each point's window
        (from its network time when not given; pass it with `starts` so that the two agree);
        warped: each point's network time w and dw/dt, given with `window` (as `warp_grid` gives them).
        """
        phys = self.physics
        t = t.to(torch.float64)
        u = self.circuit.space.to_unit(P)
        bound = phys.bind(P)
        win = None if window is None else torch.as_tensor(window, dtype=torch.long).expand(t.shape[0])
        if warped is not None and win is None:
            raise ValueError("state(): `warped` needs `window` (each point's window, as warp_grid gives it)")
        w, speed, win = self.warp(t, P, win) if warped is None else (*warped, win)
        if starts is None:
            if x0 is None:
                x0 = phys.initial_state(bound)
            starts = x0
            if self.windows > 1:
                chain = self.window_starts(P, x0, upto=int(win.max()) + 1)  # (K', N, n)
                starts = chain.gather(0, win.view(1, -1, 1).expand(1, -1, chain.shape[2]))[0]
        m = len(self.learned_idx)
        learned = torch.zeros(t.shape[0], m, dtype=torch.float64)
        rate = torch.zeros_like(learned) if with_rate else None
        for k in torch.unique(win).tolist():
            idx = torch.nonzero(win == k).flatten()
            if len(idx) == t.shape[0]:
                learned, rate = self._learned(k, w, u, starts, with_rate)
                break
            lk, rk = self._learned(k, w[idx], u[idx], starts[idx], with_rate)
            learned = learned.index_copy(0, idx, lk)
            if with_rate:
                rate = rate.index_copy(0, idx, rk)
        if not with_rate:
            return phys.pinned_values(bound, t).index_copy(1, self.learned_idx, learned)
        pinned, pin_rate = phys.pinned_with_rate(bound, t)
        x = pinned.index_copy(1, self.learned_idx, learned)
        xdot = pin_rate.index_copy(1, self.learned_idx, rate * speed.unsqueeze(1))
        return x, xdot, bound

    def full_state(self, t: Tensor, P: Tensor, x0: Tensor | None = None, starts: Tensor | None = None,
                   window: Tensor | int | None = None, warped: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Like `state`, plus the branch currents of grounded sources (which need dq/dt) and the
        solved device states."""
        x, xdot, bound = self.state(t, P, x0=x0, with_rate=True, starts=starts, window=window, warped=warped)
        return self.physics.complete(bound, x, xdot, t)[0]

    def _grid(self, t: Tensor | Sequence[float] | None) -> Tensor:
        if t is None:
            return torch.linspace(0.0, self.circuit.tstop, 501, dtype=torch.float64)
        return torch.as_tensor(t, dtype=torch.float64)

    def predict_batch(self, t: Tensor | None, P: Tensor, outputs: Sequence[str] | None = None,
                      exact: bool = False) -> Tensor:
        """(B, T, n_out) for B designs (B, P) on a shared time grid t (T,); differentiable in P.

        Uses the fast form when the model has one covering `outputs`; exact=True: the PINN itself."""
        t = self._grid(t)
        if not exact and self.fast_form is not None and self.fast_form.covers(outputs):
            return self.fast_form(t, P, self.circuit.space, outputs)
        B, T = P.shape[0], t.shape[0]
        if not torch.is_grad_enabled() and B > 1 and B * T > INFERENCE_CHUNK:
            # chunks of designs keep the activations in cache (one 500k-point pass: 1.4x slower)
            per = max(1, INFERENCE_CHUNK // T)
            return torch.cat([self.predict_batch(t, chunk, outputs, exact=True) for chunk in P.split(per)])
        chain = self.window_starts(P).transpose(0, 1)  # (B, K, n)
        w, speed, win = self.warp_grid(t, P)  # (B, T) each
        n = chain.shape[2]
        starts = chain.gather(1, win.unsqueeze(2).expand(B, T, n)).reshape(B * T, n)  # each point's window start
        PP = P.repeat_interleave(T, dim=0)
        cols = [self.physics.dae.index(o) for o in (outputs or self.circuit.outputs)]
        derived = ~self.physics.layout.learned & ~self.physics.layout.pinned
        needs_currents = bool(derived[cols].any())
        state = self.full_state if needs_currents else self.state
        x = state(t.repeat(B), PP, starts=starts, window=win.reshape(-1), warped=(w.reshape(-1), speed.reshape(-1)))
        return x[:, cols].view(B, T, len(cols))

    def predict(self, t: Tensor | Sequence[float] | None = None, params: Mapping[str, float] | None = None,
                outputs: Sequence[str] | str | None = None) -> pd.DataFrame:
        """One design as a DataFrame with the columns of `circuits.simulate` (``time``, outputs)."""
        t = self._grid(t)
        values = self.circuit.overrides(params)
        P = self.circuit.design_matrix({k: v for k, v in values.items() if k in self.circuit.space.names})
        names = self.names if outputs == "all" else list(outputs or self.circuit.outputs)
        with torch.no_grad():
            y = self.predict_batch(t, P, names)[0]
        frame = pd.DataFrame(y.numpy(), columns=names)
        frame.insert(0, "time", t.numpy())
        return frame

    def at(self, t: Tensor, P: Tensor, outputs: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        """Pointwise (y, dy/dt), each (N, n_out), at times t (N,) s for designs P (N, P).

        Differentiable in P (and t); for node voltages and internal states (not derived source
        currents).  Crossing-time refinement uses it: t* is a root of y(t, p) - level.
        """
        cols = [self.physics.dae.index(o) for o in (outputs or self.circuit.outputs)]
        derived = ~self.physics.layout.learned & ~self.physics.layout.pinned
        if bool(derived[cols].any()):
            raise SurrogateError(f"at(): {outputs} include derived source currents; use predict_batch")
        x, xdot, _ = self.state(torch.as_tensor(t, dtype=torch.float64), P, with_rate=True)
        return x[:, cols], xdot[:, cols]

    def forward(self, t: Tensor, p: Tensor) -> Tensor:
        """Differentiable outputs (T, n_out) at times t (T,) for one design p (P,)."""
        return self.predict_batch(t, p.unsqueeze(0))[0]
