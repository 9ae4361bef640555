"""`Surrogate`: the trained PINN as a differentiable map (t, p) -> waveforms; save and load.

Inference needs only `circuits` (netlist, DAE, DC operating point for the initial condition) and
torch: no Lightning, no Hydra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from circuits.circuit import Circuit, circuit_from_config
from circuits.errors import NeuroSpiceError
from surrogate.nets import PeriodicNet, PinnNet
from surrogate.physics import CircuitPhysics, Layout
from surrogate.time_scale import fit_time_scale, largest_factor, nominal_period, quadratic_features

__all__ = ["Surrogate", "SurrogateError", "load_surrogate", "save_surrogate"]

INFERENCE_CHUNK = 32768  # points per no-grad pass of predict_batch
FORMAT_VERSION = 3  # 3: per-design time scale; 2: time windows (ModuleList); 1 (one net) still loads


class SurrogateError(NeuroSpiceError):
    """A surrogate file is missing, corrupt or of another format."""


def design_runs(P: Tensor) -> tuple[Tensor, Tensor]:
    """(first row of each run of equal consecutive rows, run index of every row) of P (N, P).

    Points come grouped by design, so per-design quantities are computed once per run, not per
    point (torch.unique(dim=0) cost 0.6 s on 32k rows)."""
    with torch.no_grad():
        new = torch.ones(P.shape[0], dtype=torch.bool)
        new[1:] = (P[1:] != P[:-1]).any(dim=1)
        return torch.nonzero(new).flatten(), new.cumsum(0) - 1


def _at_window(clock: tuple[Tensor, Tensor], window: Tensor) -> tuple[Tensor, Tensor]:
    """Time rate g_k and start Ω_k on the s(p)·t axis (R, C) of window indices (R, C), each row's
    from its row of the clock (g (R, K), Ω (R, K + 1))."""
    g, omega = clock
    return g.gather(1, window), omega.gather(1, window)


class Surrogate(nn.Module):
    """x(t, p) = x0(p) + t̂·s·NN(t̂, u) for differential unknowns, s·NN for algebraic ones, and the
    source value for nodes pinned by grounded voltage sources."""

    def __init__(self, circuit: Circuit, layout: Layout | None = None, *, width: int = 64,
                 depth: int = 4, fourier: int = 0, activation: str = "tanh", corner_features: bool = True,
                 dtype: str = "float64", windows: int = 1, state_input: bool = False,
                 time_scale: str = "none", time_coef: Tensor | None = None, row_scale: str = "jacobian",
                 window_edges: Sequence[float] | None = None, periodic_from: float | None = None,
                 periodic_harmonics: int = 4, period: float | None = None, periodic_settle: float = 0.0,
                 frequency_degree: int = 0, corner_inputs: int = 0):
        super().__init__()
        if window_edges is not None:  # explicit inner edges (s): short windows where the waveform is fast
            window_edges = [float(e) for e in window_edges]
            windows = len(window_edges) + 1
        if int(windows) < 1:
            raise SurrogateError(f"windows must be >= 1, got {windows}")
        if time_scale not in ("none", "linearized"):
            raise SurrogateError(f"time_scale must be 'none' or 'linearized', got {time_scale!r}")
        self.circuit = circuit
        self.physics = CircuitPhysics(circuit, layout=layout, row_scale=row_scale)
        lay = self.physics.layout
        self.hparams_net = {"width": width, "depth": depth, "fourier": fourier, "activation": activation,
                            "corner_features": corner_features, "dtype": dtype, "windows": int(windows),
                            "state_input": bool(state_input), "time_scale": time_scale, "row_scale": row_scale,
                            "window_edges": window_edges, "periodic_from": periodic_from,
                            "periodic_harmonics": int(periodic_harmonics), "period": period,
                            "periodic_settle": float(periodic_settle), "frequency_degree": int(frequency_degree),
                            "corner_inputs": int(corner_inputs)}
        horizon = circuit.tstop
        self.time_fit_error: float | None = None  # worst relative error of the s(p) fit, when fitted
        if time_scale == "linearized":  # windows live in warped time t·s(p); see surrogate/time_scale.py
            if time_coef is None:
                time_coef, self.time_fit_error = fit_time_scale(circuit)
            horizon = circuit.tstop * largest_factor(time_coef, circuit.space.dim)
        self.register_buffer("time_coef", torch.as_tensor(time_coef if time_coef is not None else [],
                                                          dtype=torch.float64))
        if periodic_from is not None:  # windows-1 start-up windows, then one limit-cycle window
            edges = self._periodic_edges(float(periodic_from), int(windows), horizon, window_edges)
            if period is None:  # the time unit of the cycle count; F(u) then learns each design's own
                period = nominal_period(circuit)
            self.hparams_net["period"] = float(period)
        elif window_edges is None:
            edges = torch.linspace(0.0, horizon, int(windows) + 1, dtype=torch.float64)
        else:
            if time_scale != "none":
                raise SurrogateError("window_edges are in seconds: they cannot be combined with a time_scale")
            edges = torch.tensor([0.0, *window_edges, horizon], dtype=torch.float64)
            if not bool((edges[1:] > edges[:-1]).all()):
                raise SurrogateError(f"window_edges must increase strictly inside (0, tstop={horizon:g}), "
                                     f"got {window_edges}")
        self.register_buffer("edges", edges)
        self._corners = self.physics.bind(None).breakpoints() if corner_features else []
        self.register_buffer("learned_idx", torch.nonzero(lay.learned).flatten())
        # state_input: each window's network also sees its start state (the differential unknowns,
        # scaled), so it learns a flow map from that state rather than each design's phase from p
        features = torch.nonzero(lay.learned & lay.differential).flatten() if state_input else []
        self.register_buffer("state_features", torch.as_tensor(features, dtype=torch.long))
        self.nets = nn.ModuleList()
        # every window gets the same inputs (a corner at τ = 2 is a zero feature), so a window's
        # network can start from its predecessor's weights; a window split in training keeps its
        # parent's input count, which `corner_inputs` remembers
        n_corners = max([len(self._local_corners(k)) for k in range(int(windows))] + [int(corner_inputs)])
        self.hparams_net["corner_inputs"] = n_corners
        for k in range(int(windows)):
            self.nets.append(self._window_net(k))
        if periodic_from is not None:
            n_in = circuit.space.dim + len(self.state_features)
            self.nets[-1] = PeriodicNet(n_in, len(self.learned_idx), width, depth, int(periodic_harmonics),
                                        activation, int(frequency_degree))
        self.set_net_dtype(getattr(torch, dtype))

    def _local_corners(self, k: int) -> list[float]:
        """Source corners strictly inside window k, in its window time τ ∈ (0, 1)."""
        t0, t1 = float(self.edges[k]), float(self.edges[k + 1])
        return [(b - t0) / (t1 - t0) for b in self._corners if t0 < b < t1]

    def _window_net(self, k: int) -> PinnNet:
        """A fresh network for window k (its corners padded to `corner_inputs` inputs)."""
        h = self.hparams_net
        local = self._local_corners(k)
        local = local + [2.0] * (int(h["corner_inputs"]) - len(local))
        n_in = self.circuit.space.dim + len(self.state_features)
        # an oscillator's start-up windows get a time-rate head like the cycle's frequency (surrogate/rates.py)
        rate_degree = int(h["frequency_degree"]) if h["periodic_from"] is not None else 0
        return PinnNet(n_in, len(self.learned_idx), int(h["width"]), int(h["depth"]), int(h["fourier"]),
                       str(h["activation"]), local, rate_degree=rate_degree, rate_params=self.circuit.space.dim)

    def split_window(self, k: int) -> None:
        """Split window k at its midpoint into two windows, each starting from window k's weights
        (explicit edges in seconds; not for warped or limit-cycle layouts)."""
        if len(self.time_coef) or self.hparams_net["periodic_from"] is not None:
            raise SurrogateError("split_window: only plain windows in seconds can be split")
        t0, t1 = float(self.edges[k]), float(self.edges[k + 1])
        parent = self.nets[k]
        self.edges = torch.cat([self.edges[:k + 1], torch.tensor([0.5 * (t0 + t1)], dtype=torch.float64),
                                self.edges[k + 1:]])
        children = []
        for j in (k, k + 1):
            net = self._window_net(j).to(next(parent.parameters()).dtype)
            state = {name: v for name, v in parent.state_dict().items() if name != "corners"}
            net.load_state_dict(state, strict=False)
            children.append(net)
        self.nets = nn.ModuleList([*self.nets[:k], *children, *self.nets[k + 1:]])
        self.hparams_net["window_edges"] = [float(e) for e in self.edges[1:-1]]
        self.hparams_net["windows"] = len(self.nets)

    def _periodic_edges(self, start: float, windows: int, horizon: float,
                        window_edges: Sequence[float] | None) -> Tensor:
        """Edges of `windows - 1` equal start-up windows over [0, start] and the limit-cycle window."""
        name = self.circuit.name
        if window_edges is not None:
            raise SurrogateError("periodic_from sets the window edges: it cannot be combined with window_edges")
        if windows < 2:
            raise SurrogateError(f"periodic_from needs windows >= 2 (start-up windows + the cycle), got {windows}")
        if not 0.0 < start < horizon:
            raise SurrogateError(f"periodic_from must lie in (0, {horizon:g}) s, got {start:g}")
        if self.physics.bind(None).breakpoints():
            raise SurrogateError(f"circuit {name}: periodic_from is for autonomous circuits (oscillators); "
                                 "this one has time-dependent sources (PULSE/PWL corners)")
        inner = torch.linspace(0.0, start, windows, dtype=torch.float64)
        return torch.cat([inner, torch.tensor([horizon], dtype=torch.float64)])

    @property
    def windows(self) -> int:
        """Number of consecutive time windows, each with its own network (hard continuity between them)."""
        return len(self.nets)

    def set_net_dtype(self, dtype: torch.dtype) -> None:
        """Run the networks in float32 (fast Adam, inference) or float64 (L-BFGS); physics stays float64."""
        self.nets.to(dtype)
        self.hparams_net["dtype"] = str(dtype).removeprefix("torch.")

    def window_of(self, w: Tensor) -> Tensor:
        """Window index of each (warped) time; a time on an inner edge belongs to the later window."""
        return torch.bucketize(w, self.edges[1:-1], right=True)

    def time_factor(self, P: Tensor) -> Tensor:
        """s(p) (N,): the network's time runs at t·s(p) (all ones without a time scale)."""
        if not len(self.time_coef):
            return torch.ones(P.shape[0], dtype=torch.float64)
        return (quadratic_features(self.circuit.space.to_unit(P)) @ self.time_coef).exp()

    def _clock(self, P: Tensor) -> tuple[Tensor, Tensor] | None:
        """Per row of P: each window's time rate g_k (N, K) and its start on the s(p)·t axis Ω_k
        (N, K + 1), or None when no window has a rate head (then w = s(p)·t)."""
        nets = [net if isinstance(net, PinnNet) and net.log_rate is not None else None for net in self.nets]
        if all(net is None for net in nets):
            return None
        first, run = design_runs(P)
        u = self.circuit.space.to_unit(P[first])
        g = torch.ones(len(first), self.windows, dtype=torch.float64)
        for k, net in enumerate(nets):
            if net is not None:
                g[:, k] = net.time_rate(u.to(net.log_rate.linear.weight.dtype)).squeeze(1).to(torch.float64)
        widths = self.edges[1:] - self.edges[:-1]
        omega = torch.cat([torch.zeros(len(first), 1, dtype=torch.float64), torch.cumsum(widths / g, dim=1)], dim=1)
        return g[run], omega[run]

    def warp(self, t: Tensor, P: Tensor, window: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Network time w (N,), dw/dt (N,) and window (N,) of physical times t (N,) for designs P (N, P).

        w = s(p)·t, except that a window with a time-rate head g(p) (an oscillator's start-up
        windows) lasts 1/g as long on the s(p)·t axis: w runs g times faster through it.  The
        waveform as a function of w, and so every window's start state, does not depend on g."""
        s = self.time_factor(P).unsqueeze(1)
        w, speed, win = self._apply_clock(t.unsqueeze(1) * s, s, self._clock(P),
                                          None if window is None else window.unsqueeze(1))
        return w.squeeze(1), speed.squeeze(1), win.squeeze(1)

    def warp_grid(self, t: Tensor, P: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`warp` of times t (T,) for each design P (B, P): w, dw/dt and window, each (B, T), from
        one clock per design (per point, the clock cost 12 % of a 1000 × 500 inference)."""
        s = self.time_factor(P).unsqueeze(1)
        return self._apply_clock(t.unsqueeze(0) * s, s, self._clock(P))

    def _apply_clock(self, scaled: Tensor, s: Tensor, clock: tuple[Tensor, Tensor] | None,
                     window: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """w, dw/dt and window (R, C) of times s(p)·t (R, C) whose rows have s (R, 1) and clock (g, Ω)."""
        if clock is None:
            return scaled, s.expand_as(scaled), (self.window_of(scaled) if window is None else window)
        if window is None:  # an inner edge belongs to the later window, as in window_of
            window = (scaled.unsqueeze(2) >= clock[1][:, None, 1:-1]).sum(dim=2)
        gk, start = _at_window(clock, window)
        return self.edges[window] + gk * (scaled - start), s * gk, window

    def unwarp(self, w: Tensor, P: Tensor, window: Tensor | int | None = None) -> Tensor:
        """Physical times t (N,) of network times w (N,) for designs P (N, P): the inverse of `warp`."""
        s = self.time_factor(P)
        clock = self._clock(P)
        if clock is None:
            return w / s
        win = self.window_of(w) if window is None else torch.as_tensor(window, dtype=torch.long).expand(w.shape[0])
        gk, start = _at_window(clock, win.unsqueeze(1))
        return (start.squeeze(1) + (w - self.edges[win]) / gk.squeeze(1)) / s

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
        if len(self.state_features):
            sf = self.state_features
            u = torch.cat([u, start[:, sf] / self.physics.layout.x_scale[sf]], dim=1)
        if isinstance(net, PeriodicNet):
            return self._on_cycle(net, t - t0, u.to(dtype), start, with_rate)
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

    def _on_cycle(self, net: PeriodicNet, elapsed: Tensor, u: Tensor, start: Tensor, with_rate: bool):
        """Learned unknowns in the limit-cycle window: scale·y(c) + (start − scale·y(0))·g(n) for
        differential ones, n = F(u)·elapsed / period cycles since the window's start, c = n mod 1,
        so the waveform leaves the start state continuously; scale·y(c) for algebraic ones.

        g ≡ 1 (periodic_settle = 0) makes the cycle pass through the start state exactly;
        g = exp(−n / periodic_settle) lets a start state slightly off the orbit settle onto it (the
        decay of the transverse directions), so the start-up windows' error does not bend the orbit."""
        period = float(self.hparams_net["period"])
        first, run = design_runs(u)
        freq = net.frequency(u[first])[run]  # once per design: a Legendre head per point cost 20 % of inference
        n = freq.to(torch.float64) * (elapsed / period).unsqueeze(1)
        # whole cycles dropped: the Fourier features' 2π is rounded (float32 in Adam), so only the
        # fractional cycle keeps the waveform exactly periodic (the rate is unchanged)
        cycles = (n - n.detach().floor()).to(u.dtype)
        settle = float(self.hparams_net.get("periodic_settle") or 0.0)
        decay = torch.exp(-n / settle) if settle > 0 else torch.ones_like(n)
        gap = self._settling_gap(net, u, start)
        learned, rate = self.cycle_values(net, cycles, u, start, with_rate, decay=decay, gap=gap)
        if with_rate and settle > 0:  # d/dn of the settling term
            rate = rate - gap * decay / settle
        return learned, (rate * freq.to(torch.float64) / period if with_rate else None)

    def _settling_gap(self, net: PeriodicNet, u: Tensor, start: Tensor) -> Tensor:
        """start − scale·y(0) for differential unknowns, 0 for algebraic ones (N, m)."""
        lay = self.physics.layout
        scale = lay.x_scale[self.learned_idx]
        diff = lay.differential[self.learned_idx]
        first, run = design_runs(u)  # y(0, p) once per design, not per point
        y0 = net.cycle(torch.zeros(len(first), 1, dtype=u.dtype), u[first]).to(torch.float64)[run]
        return torch.where(diff, start[:, self.learned_idx] - scale * y0, torch.zeros_like(y0))

    def cycle_values(self, net: PeriodicNet, cycles: Tensor, u: Tensor, start: Tensor, with_rate: bool = False,
                     decay: Tensor | float = 1.0, gap: Tensor | None = None):
        """Learned unknowns (N, m) at a fraction `cycles` (N, 1) of the limit cycle (and d/dcycle of
        the periodic part): scale·y + decay·gap for differential ones, gap = start − scale·y(0)
        (`_settling_gap`, computed here unless given)."""
        if with_rate:
            y, y_rate = net.cycle.forward_with_rate(cycles, u)
            y, y_rate = y.to(torch.float64), y_rate.to(torch.float64)
        else:
            y, y_rate = net.cycle(cycles, u).to(torch.float64), None
        scale = self.physics.layout.x_scale[self.learned_idx]
        if gap is None:
            gap = self._settling_gap(net, u, start)
        learned = scale * y + decay * gap
        return learned, (scale * y_rate if with_rate else None)

    def window_starts(self, P: Tensor, x0: Tensor | None = None, upto: int | None = None) -> Tensor:
        """State at the start of every window (K, B, n) for designs P (B, P), chained from x0(p).

        Window k+1 starts where window k ends, so the waveform is continuous by construction.
        """
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
        (from its warped time when not given; pass it with `starts` so that the two agree);
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
        """Like `state`, plus the branch currents of grounded sources (which need dq/dt)."""
        x, xdot, bound = self.state(t, P, x0=x0, with_rate=True, starts=starts, window=window, warped=warped)
        x, _ = self.physics.fill_source_currents(self.physics.rows(bound, x, xdot, t), x)
        return x

    def _grid(self, t: Tensor | Sequence[float] | None) -> Tensor:
        if t is None:
            return torch.linspace(0.0, self.circuit.tstop, 501, dtype=torch.float64)
        return torch.as_tensor(t, dtype=torch.float64)

    def predict_batch(self, t: Tensor | None, P: Tensor, outputs: Sequence[str] | None = None) -> Tensor:
        """(B, T, n_out) for B designs (B, P) on a shared time grid t (T,); differentiable in P."""
        t = self._grid(t)
        B, T = P.shape[0], t.shape[0]
        if not torch.is_grad_enabled() and B > 1 and B * T > INFERENCE_CHUNK:
            # chunks of designs keep the activations in cache (one 500k-point pass: 1.4x slower)
            per = max(1, INFERENCE_CHUNK // T)
            return torch.cat([self.predict_batch(t, chunk, outputs) for chunk in P.split(per)])
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


def save_surrogate(model: Surrogate, path: str | Path, metrics: Mapping[str, Any] | None = None) -> None:
    """Write the self-contained surrogate file atomically."""
    from circuits.io import atomic_path

    lay = model.physics.layout
    blob = {"format": "neurospice-surrogate", "version": FORMAT_VERSION,
            "circuit_config": model.circuit.config, "net": model.hparams_net,
            "layout": {k: getattr(lay, k) for k in ("pinned", "differential", "learned", "x_scale", "row_scale")},
            "state_dict": model.nets.state_dict(), "metrics": dict(metrics or {}),
            "time_coef": model.time_coef}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_surrogate(path: str | Path) -> Surrogate:
    """Load a surrogate file written by `save_surrogate` (one-line SurrogateError if unusable)."""
    path = Path(path)
    if not path.is_file():
        raise SurrogateError(f"{path}: no such surrogate file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt files
        raise SurrogateError(f"{path}: not a readable surrogate file ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != "neurospice-surrogate":
        raise SurrogateError(f"{path}: not a NeuroSPICE surrogate file")
    if blob.get("version") not in (1, 2, FORMAT_VERSION):
        raise SurrogateError(f"{path}: surrogate format version {blob.get('version')} "
                             f"(this NeuroSPICE reads {FORMAT_VERSION})")
    circuit = circuit_from_config(blob["circuit_config"], source=str(path))
    coef = blob.get("time_coef")
    model = Surrogate(circuit, Layout(**blob["layout"]), **blob["net"],
                      time_coef=coef if coef is not None and len(coef) else None)
    state = blob["state_dict"]
    if blob["version"] == 1:  # one network, saved before time windows existed
        state = {f"0.{k}": v for k, v in state.items()}
    model.nets.load_state_dict(state)
    model.metrics = blob.get("metrics", {})
    model.eval()
    return model
