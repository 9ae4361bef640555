"""`LimitCycleSurrogate`: an autonomous oscillator - start-up windows, then one limit-cycle window
with a learned frequency, all in warped time t·s(p) (`surrogate/time_scale.py`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from circuits.circuit import Circuit
from surrogate.models.base import Surrogate, SurrogateError, design_runs
from surrogate.nets import PeriodicNet, PinnNet
from surrogate.physics import Layout
from surrogate.time_scale import fit_time_scale, largest_factor, nominal_period, quadratic_features

__all__ = ["LimitCycleSurrogate", "CYCLE_ALLOWANCE"]

#: a limit-cycle window covers all time after the start-up: this many windows' training time
CYCLE_ALLOWANCE = 3.0


def _at_window(clock: tuple[Tensor, Tensor], window: Tensor) -> tuple[Tensor, Tensor]:
    """Time rate g_k and start Ω_k on the s(p)·t axis (R, C) of window indices (R, C), each row's
    from its row of the clock (g (R, K), Ω (R, K + 1))."""
    g, omega = clock
    return g.gather(1, window), omega.gather(1, window)


class LimitCycleSurrogate(Surrogate):
    """`windows - 1` start-up windows over [0, periodic_from] of warped time w = t·s(p), then one
    limit-cycle window y(c, u) periodic in the cycle count c = F(u)·(elapsed w)/period.

    Each start-up window has a time-rate head g(u) (it lasts 1/g as long on the s(p)·t axis) and
    the cycle a frequency head F(u), both Legendre polynomials refitted to the speeds at which
    the circuit equations traverse the learned shapes (`surrogate/rates.py`)."""

    kind = "limit_cycle"
    warped_time = True

    def __init__(self, circuit: Circuit, layout: Layout | None = None, *, windows: int = 2,
                 periodic_from: float, period: float | None = None, periodic_harmonics: int = 4,
                 periodic_settle: float = 0.0, frequency_degree: int = 5, time_coef: Tensor | None = None,
                 **common: Any):
        super().__init__(circuit, layout, **common)
        self.time_fit_error: float | None = None  # worst relative error of the s(p) fit, when fitted
        if time_coef is None:
            time_coef, self.time_fit_error = fit_time_scale(circuit)
        self.register_buffer("time_coef", torch.as_tensor(time_coef, dtype=torch.float64))
        horizon = circuit.tstop * largest_factor(self.time_coef, circuit.space.dim)
        if int(windows) < 2:
            raise SurrogateError(f"a limit-cycle model needs windows >= 2 (start-up windows + the cycle), got {windows}")
        start = float(periodic_from)
        if not 0.0 < start < horizon:
            raise SurrogateError(f"periodic_from must lie in (0, {horizon:g}) s, got {start:g}")
        if self.physics.bind(None).breakpoints():
            raise SurrogateError(f"circuit {circuit.name}: a limit-cycle model is for autonomous circuits "
                                 "(oscillators); this one has time-dependent sources (PULSE/PWL corners)")
        self.hparams_net.update({"windows": int(windows), "periodic_from": start,
                                 "period": float(period if period is not None else nominal_period(circuit)),
                                 "periodic_harmonics": int(periodic_harmonics),
                                 "periodic_settle": float(periodic_settle), "frequency_degree": int(frequency_degree)})
        edges = torch.cat([torch.linspace(0.0, start, int(windows), dtype=torch.float64),
                           torch.tensor([horizon], dtype=torch.float64)])
        self._set_windows(edges)

    @property
    def cycle_window(self) -> int:
        """Index of the limit-cycle window (the last)."""
        return self.windows - 1

    @property
    def cycle_net(self) -> PeriodicNet:
        """The limit-cycle window's network."""
        return self.nets[self.cycle_window]

    def _set_windows(self, edges: Tensor) -> None:
        super()._set_windows(edges)
        h = self.hparams_net
        self.nets[-1] = PeriodicNet(self.n_inputs, len(self.learned_idx), h["width"], h["depth"],
                                    h["periodic_harmonics"], h["activation"], h["frequency_degree"])
        self.set_net_dtype(getattr(torch, h["dtype"]))

    def _window_net(self, k: int, rate_degree: int = 0) -> PinnNet:
        # start-up windows get a time-rate head like the cycle's frequency (surrogate/rates.py)
        return super()._window_net(k, rate_degree=int(self.hparams_net["frequency_degree"]))

    def rate_head(self, k: int) -> nn.Module | None:
        net = self.nets[k]
        return net.log_frequency if isinstance(net, PeriodicNet) else net.log_rate

    def retrained_with(self, k: int) -> list[int]:
        """The cycle, after a start-up window: its phase and frequency were fitted on the start-up
        windows' old end states and did not follow new ones (ring5: rounds on start-up windows
        improved each window and worsened the whole, 4.1 % to 5.0 %; one on the cycle gave 1.6 %)."""
        return [self.cycle_window] if k < self.cycle_window else []

    def cost_weight(self, k: int) -> float:
        return CYCLE_ALLOWANCE if k == self.cycle_window else 1.0

    # -- warped time ------------------------------------------------------------------------------

    def time_factor(self, P: Tensor) -> Tensor:
        """s(p) (N,): the network's time runs at t·s(p)."""
        return (quadratic_features(self.circuit.space.to_unit(P)) @ self.time_coef).exp()

    def _clock(self, P: Tensor) -> tuple[Tensor, Tensor]:
        """Per row of P: each window's time rate g_k (N, K) and its start on the s(p)·t axis Ω_k (N, K + 1)."""
        first, run = design_runs(P)
        u = self.circuit.space.to_unit(P[first])
        g = torch.ones(len(first), self.windows, dtype=torch.float64)
        for k, net in enumerate(self.nets[:-1]):
            if net.log_rate is not None:
                g[:, k] = net.time_rate(u.to(net.log_rate.linear.weight.dtype)).squeeze(1).to(torch.float64)
        widths = self.edges[1:] - self.edges[:-1]
        omega = torch.cat([torch.zeros(len(first), 1, dtype=torch.float64), torch.cumsum(widths / g, dim=1)], dim=1)
        return g[run], omega[run]

    def warp(self, t: Tensor, P: Tensor, window: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """w = s(p)·t, except that a start-up window with rate g(p) lasts 1/g as long on the s(p)·t
        axis: w runs g times faster through it.  The waveform as a function of w, and so every
        window's start state, does not depend on g."""
        s = self.time_factor(P).unsqueeze(1)
        w, speed, win = self._apply_clock(t.unsqueeze(1) * s, s, self._clock(P),
                                          None if window is None else window.unsqueeze(1))
        return w.squeeze(1), speed.squeeze(1), win.squeeze(1)

    def warp_grid(self, t: Tensor, P: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`warp` of times t (T,) for each design P (B, P), from one clock per design (per point,
        the clock cost 12 % of a 1000 × 500 inference)."""
        s = self.time_factor(P).unsqueeze(1)
        return self._apply_clock(t.unsqueeze(0) * s, s, self._clock(P))

    def _apply_clock(self, scaled: Tensor, s: Tensor, clock: tuple[Tensor, Tensor],
                     window: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """w, dw/dt and window (R, C) of times s(p)·t (R, C) whose rows have s (R, 1) and clock (g, Ω)."""
        if window is None:  # an inner edge belongs to the later window, as in window_of
            window = (scaled.unsqueeze(2) >= clock[1][:, None, 1:-1]).sum(dim=2)
        gk, start = _at_window(clock, window)
        return self.edges[window] + gk * (scaled - start), s * gk, window

    def unwarp(self, w: Tensor, P: Tensor, window: Tensor | int | None = None) -> Tensor:
        s = self.time_factor(P)
        win = self.window_of(w) if window is None else torch.as_tensor(window, dtype=torch.long).expand(w.shape[0])
        gk, start = _at_window(self._clock(P), win.unsqueeze(1))
        return (start.squeeze(1) + (w - self.edges[win]) / gk.squeeze(1)) / s

    # -- the cycle ----------------------------------------------------------------------------------

    def _learned(self, k: int, t: Tensor, u: Tensor, start: Tensor, with_rate: bool):
        if k != self.cycle_window:
            return super()._learned(k, t, u, start, with_rate)
        net = self.cycle_net
        return self._on_cycle(net, t - float(self.edges[k]), self._window_inputs(u, start).to(
            next(net.parameters()).dtype), start, with_rate)

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
        settle = float(self.hparams_net["periodic_settle"])
        decay = torch.exp(-n / settle) if settle > 0 else torch.ones_like(n)
        gap = self._settling_gap(net, u, start)
        learned, rate = self.cycle_values(cycles, u, start, with_rate, decay=decay, gap=gap)
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

    @property
    def distil_decay(self) -> float:
        """Weight of the settling term while distilling the cycle: 1 for an orbit pinned to the start
        state; 0 with settling, so y(c) itself learns the orbit (the gap decays anyway)."""
        return 0.0 if float(self.hparams_net["periodic_settle"]) > 0 else 1.0

    def cycle_values(self, cycles: Tensor, u: Tensor, start: Tensor, with_rate: bool = False,
                     decay: Tensor | float = 1.0, gap: Tensor | None = None, net: PeriodicNet | None = None):
        """Learned unknowns (N, m) at a fraction `cycles` (N, 1) of the limit cycle (and d/dcycle of
        the periodic part): scale·y + decay·gap for differential ones, gap = start − scale·y(0)
        (`_settling_gap`, computed here unless given); `net`: a copy of the cycle's network to use."""
        net = self.cycle_net if net is None else net
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

    def cycle_frequency(self, P: Tensor, signal: str, level: float, phases: int = 8) -> tuple[Tensor, Tensor, Tensor]:
        """The limit cycle's frequency in Hz (B,) for designs P (B, P), differentiable in P; whether
        `signal` (a learned unknown) crosses `level` on the cycle (B,); and when the cycle starts, in
        seconds (B,).  On the cycle every crossing-based period measurement equals 1 / frequency.

        The crossing is checked at `phases` points of the cycle in float32 (a swing through the
        level shows at 8 of them; it is the cost of the check that matters for 1e5 designs)."""
        import copy

        col = self.physics.dae.index(signal)
        where = torch.nonzero(self.learned_idx == col).flatten()
        if not len(where):
            raise SurrogateError(f"cycle_frequency: {signal} is not learned by the network (pinned or derived)")
        k = self.cycle_window
        start = self.window_starts(P, upto=k + 1)[k]
        net = self.cycle_net
        u = self._window_inputs(self.circuit.space.to_unit(P), start)
        freq = net.frequency(u.to(next(net.parameters()).dtype)).squeeze(1).to(torch.float64)
        hz = freq * self.time_factor(P) / float(self.hparams_net["period"])
        with torch.no_grad():
            fast = copy.deepcopy(net).float()
            c = ((torch.arange(phases, dtype=torch.float32) + 0.5) / phases).repeat(P.shape[0]).unsqueeze(1)
            values, _ = self.cycle_values(c, u.float().repeat_interleave(phases, dim=0),
                                          start.repeat_interleave(phases, dim=0), decay=self.distil_decay, net=fast)
            v = values[:, int(where[0])].view(P.shape[0], phases)
            crossed = (v.amin(dim=1) < level) & (v.amax(dim=1) > level)
            begins = self.unwarp(self.edges[k].expand(P.shape[0]), P, k)
        return hz, crossed, begins
