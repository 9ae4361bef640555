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
from surrogate.nets import PinnNet
from surrogate.physics import CircuitPhysics, Layout

__all__ = ["Surrogate", "SurrogateError", "load_surrogate", "save_surrogate"]

FORMAT_VERSION = 1


class SurrogateError(NeuroSpiceError):
    """A surrogate file is missing, corrupt or of another format."""


class Surrogate(nn.Module):
    """x(t, p) = x0(p) + t̂·s·NN(t̂, u) for differential unknowns, s·NN for algebraic ones, and the
    source value for nodes pinned by grounded voltage sources."""

    def __init__(self, circuit: Circuit, layout: Layout | None = None, *, width: int = 64,
                 depth: int = 4, fourier: int = 0, activation: str = "tanh", corner_features: bool = True,
                 dtype: str = "float64"):
        super().__init__()
        self.circuit = circuit
        self.physics = CircuitPhysics(circuit, layout=layout)
        lay = self.physics.layout
        self.hparams_net = {"width": width, "depth": depth, "fourier": fourier, "activation": activation,
                            "corner_features": corner_features, "dtype": dtype}
        corners = [b / circuit.tstop for b in self.physics.bind(None).breakpoints()] if corner_features else []
        self.net = PinnNet(circuit.space.dim, int(lay.learned.sum()), width, depth, fourier, activation, corners)
        self.register_buffer("learned_idx", torch.nonzero(lay.learned).flatten())
        self.set_net_dtype(getattr(torch, dtype))

    def set_net_dtype(self, dtype: torch.dtype) -> None:
        """Run the network in float32 (fast Adam, inference) or float64 (L-BFGS); physics stays float64."""
        self.net.to(dtype)
        self.hparams_net["dtype"] = str(dtype).removeprefix("torch.")

    @property
    def names(self) -> list[str]:
        """Names of all unknowns (``v(n1)``, ``i(vdd)``, ``n1.p`` ...)."""
        return self.physics.names

    def state(self, t: Tensor, P: Tensor, x0: Tensor | None = None, with_rate: bool = False):
        """All unknowns x (N, n) at points (t (N,) seconds, P (N, P) designs); optionally dx/dt."""
        phys, lay = self.physics, self.physics.layout
        tstop = phys.tstop
        t = t.to(torch.float64)
        t_hat = (t / tstop).unsqueeze(1)
        u = self.circuit.space.to_unit(P)
        bound = phys.bind(P)
        if x0 is None:
            x0 = phys.initial_state(bound)
        net_dtype = next(self.net.parameters()).dtype
        if with_rate:
            y, y_rate = self.net.forward_with_rate(t_hat.to(net_dtype), u.to(net_dtype))
            y, y_rate = y.to(torch.float64), y_rate.to(torch.float64)
        else:
            y, y_rate = self.net(t_hat.to(net_dtype), u.to(net_dtype)).to(torch.float64), None
        scale = lay.x_scale[self.learned_idx]
        diff = lay.differential[self.learned_idx]
        learned = torch.where(diff, x0[:, self.learned_idx] + t_hat * scale * y, scale * y)
        x = phys.pinned_values(bound, t).index_copy(1, self.learned_idx, learned)
        if not with_rate:
            return x
        rate_learned = torch.where(diff, scale * (y + t_hat * y_rate), scale * y_rate) / tstop
        delta = 1e-6 * tstop
        pin_rate = (phys.pinned_values(bound, t + delta) - phys.pinned_values(bound, t - delta)) / (2 * delta)
        xdot = pin_rate.index_copy(1, self.learned_idx, rate_learned)
        return x, xdot, bound

    def full_state(self, t: Tensor, P: Tensor, x0: Tensor | None = None) -> Tensor:
        """Like `state`, plus the branch currents of grounded sources (which need dq/dt)."""
        x, xdot, bound = self.state(t, P, x0=x0, with_rate=True)
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
        bound0 = self.physics.bind(P)
        x0 = self.physics.initial_state(bound0)
        PP = P.repeat_interleave(T, dim=0)
        cols = [self.physics.dae.index(o) for o in (outputs or self.circuit.outputs)]
        derived = ~self.physics.layout.learned & ~self.physics.layout.pinned
        needs_currents = bool(derived[cols].any())
        state = self.full_state if needs_currents else self.state
        x = state(t.repeat(B), PP, x0=x0.repeat_interleave(T, dim=0))
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
            "state_dict": model.net.state_dict(), "metrics": dict(metrics or {})}
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
    if blob.get("version") != FORMAT_VERSION:
        raise SurrogateError(f"{path}: surrogate format version {blob.get('version')} "
                             f"(this NeuroSPICE reads {FORMAT_VERSION})")
    circuit = circuit_from_config(blob["circuit_config"], source=str(path))
    model = Surrogate(circuit, Layout(**blob["layout"]), **blob["net"])
    model.net.load_state_dict(blob["state_dict"])
    model.metrics = blob.get("metrics", {})
    model.eval()
    return model
