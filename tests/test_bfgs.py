"""Dense BFGS (surrogate/bfgs.py) against closed-form minima."""

from __future__ import annotations

import torch

from surrogate.bfgs import DENSE_BFGS_MAX_WEIGHTS, DenseBFGS, dense_bfgs_fits


def _minimise(loss_of, w0: torch.Tensor, iterations: int, chunk: int = 100) -> tuple[torch.Tensor, DenseBFGS]:
    w = w0.clone().requires_grad_(True)
    opt = DenseBFGS([w], max_iter=chunk)

    def closure():
        opt.zero_grad()
        loss = loss_of(w)
        loss.backward()
        return loss

    for _ in range(iterations // chunk):
        opt.step(closure)
    return w.detach(), opt


def test_quadratic_minimiser_is_the_linear_solve() -> None:
    """On an SPD quadratic 0.5 w'Aw - b'w (condition ~300), BFGS reaches A^-1 b to rounding of the
    loss within a few times n iterations (inexact Wolfe line searches: no n-step termination)."""
    gen = torch.Generator().manual_seed(3)
    n = 12
    M = torch.randn(n, n, generator=gen, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    w, opt = _minimise(lambda w: 0.5 * w @ A @ w - b @ w, torch.zeros(n, dtype=torch.float64), 4 * n, chunk=4 * n)
    assert float((w - torch.linalg.solve(A, b)).abs().max()) < 1e-6
    assert opt.state[opt.param_groups[0]["params"][0]]["n_iter"] < 4 * n  # stopped on its own


def test_rosenbrock_minimum_across_chunks() -> None:
    """The Rosenbrock valley's minimum (1, 1), reached over several `step` calls (the estimate is kept
    between them, as the window schedule calls it in chunks)."""
    def rosenbrock(w):
        return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2

    w, opt = _minimise(rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64), 200, chunk=10)
    assert torch.allclose(w, torch.ones(2, dtype=torch.float64), atol=1e-7)
    assert opt.state[opt.param_groups[0]["params"][0]]["H"] is not None


def test_only_small_networks_get_dense_bfgs() -> None:
    """The n x n estimate is for networks up to DENSE_BFGS_MAX_WEIGHTS weights."""
    small = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 2))
    large = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 64),
                                torch.nn.Linear(64, 2))
    assert sum(p.numel() for p in large.parameters()) > DENSE_BFGS_MAX_WEIGHTS
    assert dense_bfgs_fits(small.parameters()) and not dense_bfgs_fits(large.parameters())


def test_pending_updates_give_the_iterates_of_textbook_bfgs() -> None:
    """Held-apart rank-2 updates and the carried H g change no iterate: 40 iterations (5 folds of
    the pending updates) on an extended Rosenbrock match BFGS with the textbook dense update
    H <- (I - rho s y') H (I - rho y s') + rho s s' and the same line search."""
    from torch.optim.lbfgs import _strong_wolfe

    def loss_of(w):
        return ((1 - w[:-1]) ** 2).sum() + 10 * ((w[1:] - w[:-1] ** 2) ** 2).sum()

    def value_and_grad(w):
        w = w.detach().requires_grad_(True)
        loss = loss_of(w)
        loss.backward()
        return float(loss), w.grad

    n, iterations = 10, 40
    w0 = torch.linspace(-1.0, 0.5, n, dtype=torch.float64)
    w, f, g, H = w0.clone(), *value_and_grad(w0), None
    eye = torch.eye(n, dtype=torch.float64)
    for _ in range(iterations):
        d, t = (-g, min(1.0, 1.0 / float(g.abs().sum()))) if H is None else (-(H @ g), 1.0)
        f, g_new, t, _ = _strong_wolfe(lambda x, s, dd: value_and_grad(x + s * dd), w, t, d, f, g, float(g @ d))
        s, y = t * d, g_new - g
        w, g = w + s, g_new
        rho = 1.0 / float(y @ s)
        if H is None:
            H = eye / (rho * float(y @ y))
        else:
            H = (eye - rho * torch.outer(s, y)) @ H @ (eye - rho * torch.outer(y, s)) + rho * torch.outer(s, s)
    ours, _ = _minimise(loss_of, w0, iterations, chunk=iterations)
    assert float((ours - w).abs().max()) < 1e-9
