"""The network (t, p) -> y and its time derivative, with optional Fourier time features."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PinnNet"]


class PinnNet(nn.Module):
    """MLP on [t̂, sin/cos(2πk t̂), (t̂ - b)₊, u] with t̂ = t/tstop, b the source corners (in t̂) and u
    the unit-cube design.

    `forward_with_rate` returns y and dy/dt̂ from one forward-mode JVP through the MLP; the
    time features' derivatives are analytic, so no dual number ever meets a plain tensor.
    """

    def __init__(self, n_params: int, n_out: int, width: int = 64, depth: int = 4, fourier: int = 0,
                 activation: str = "tanh", breakpoints: list[float] | None = None):
        super().__init__()
        self.fourier = fourier
        act = {"tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU}[activation]
        self.register_buffer("corners", torch.tensor(sorted(breakpoints or []), dtype=torch.float32))
        dims = [1 + 2 * fourier + len(self.corners) + n_params] + [width] * depth
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), act()]
        layers.append(nn.Linear(dims[-1], n_out))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("omega", 2 * math.pi * torch.arange(1, fourier + 1, dtype=torch.float32))

    def _features(self, t_hat: Tensor) -> tuple[Tensor, Tensor]:
        """Time features and their derivative with respect to t̂: t̂, Fourier pairs, and a ramp
        (t̂ - b)₊ starting at every source corner b, so slope jumps at corners are representable."""
        feats, rates = [t_hat], [torch.ones_like(t_hat)]
        if self.fourier:
            arg = t_hat * self.omega.to(t_hat)
            feats += [torch.sin(arg), torch.cos(arg)]
            rates += [self.omega * torch.cos(arg), -self.omega * torch.sin(arg)]
        if len(self.corners):
            shifted = t_hat - self.corners.to(t_hat)
            feats.append(torch.clamp(shifted, min=0.0))
            rates.append((shifted > 0).to(t_hat))
        return torch.cat(feats, dim=1), torch.cat(rates, dim=1)

    def forward(self, t_hat: Tensor, u: Tensor) -> Tensor:
        """y (N, n_out) for t̂ (N, 1) and unit designs u (N, P)."""
        feats, _ = self._features(t_hat)
        return self.mlp(torch.cat([feats, u], dim=1))

    def forward_with_rate(self, t_hat: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """(y, dy/dt̂), both (N, n_out)."""
        feats, rates = self._features(t_hat)
        inputs = torch.cat([feats, u], dim=1)
        tangent = torch.cat([rates, torch.zeros_like(u)], dim=1)
        return torch.func.jvp(self.mlp, (inputs,), (tangent,))
