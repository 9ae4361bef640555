"""The chunked affine recurrence gives the step-by-step loop's states."""

from __future__ import annotations

import numpy as np
import pytest

from circuits.recurrence import AffineRecurrence


@pytest.mark.parametrize("dim,K", [(3, 1000), (12, 333), (40, 70), (600, 5)])
def test_chunked_recurrence_equals_the_step_by_step_loop(dim, K):
    """z_{k+1} = A z_k + d_k: chunks of matrix products (and the remainder) reproduce the loop to
    rounding, for a stable A close to the unit circle (a lossless LC tank's trapezoidal map)."""
    rng = np.random.default_rng(dim)
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    A = 0.999 * Q  # eigenvalues on |z| = 0.999
    z0, drive = rng.standard_normal(dim), rng.standard_normal((K, dim))
    expected, z = np.empty((K, dim)), z0
    for k in range(K):
        z = A @ z + drive[k]
        expected[k] = z
    got = AffineRecurrence(A).run(z0, drive)
    assert np.abs(got - expected).max() <= 1e-11 * np.abs(expected).max()
