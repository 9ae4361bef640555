"""The affine recurrence z_{k+1} = A z_k + d_k over many steps, in chunks of matrix products.

A linear circuit pinned at its step ceiling repeats one step map (`circuits.solve._run_ahead`); one
small matrix-vector product per step in a Python loop costs ~5 us of overhead each.  Within a chunk
of m steps the states are z_{c+i} = A^(i+1) z_c + sum_{j<=i} A^(i-j) d_{c+j}: the driven part of
every chunk is one matrix product with the block-Toeplitz matrix of A's powers, and only the chunk
starts are carried from one chunk to the next in a loop.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AffineRecurrence"]

TOEPLITZ_SIZE = 512  # the block-Toeplitz matrix's side (m * dim) at most


class AffineRecurrence:
    """z_{k+1} = A z_k + d_k for a fixed A (dim, dim)."""

    def __init__(self, A: np.ndarray):
        self.A = A
        self.m = max(1, min(64, TOEPLITZ_SIZE // max(A.shape[0], 1)))
        self.P: np.ndarray | None = None  # A^1 .. A^m (m, dim, dim), built on the first long run
        self.T: np.ndarray | None = None  # the block-Toeplitz matrix (m dim, m dim) of A's powers

    def _build(self) -> None:
        dim, A = self.A.shape[0], self.A
        powers = [np.eye(dim)]
        for _ in range(self.m):
            powers.append(A @ powers[-1])
        self.P = np.stack(powers[1:])
        T = np.zeros((self.m, dim, self.m, dim))
        for i in range(self.m):
            for j in range(i + 1):
                T[i, :, j, :] = powers[i - j]
        self.T = T.reshape(self.m * dim, self.m * dim)

    def run(self, z0: np.ndarray, drive: np.ndarray) -> np.ndarray:
        """The states z_1 .. z_K (K, dim) from z_0 and the drives d_0 .. d_{K-1} (K, dim)."""
        K, dim = drive.shape
        m = self.m
        if m == 1 or K < m:
            return self._loop(z0, drive)
        if self.T is None:
            self._build()
        chunks = K // m
        local = (drive[:chunks * m].reshape(chunks, m * dim) @ self.T.T).reshape(chunks, m, dim)
        Z = np.empty((K, dim))
        z = z0
        for c in range(chunks):
            block = local[c] + self.P @ z
            Z[c * m:(c + 1) * m] = block
            z = block[-1]
        if chunks * m < K:
            Z[chunks * m:] = self._loop(z, drive[chunks * m:])
        return Z

    def _loop(self, z: np.ndarray, drive: np.ndarray) -> np.ndarray:
        Z = np.empty_like(drive)
        for k in range(drive.shape[0]):
            z = self.A @ z + drive[k]
            Z[k] = z
        return Z
