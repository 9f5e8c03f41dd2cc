"""Initialisers and parameter counts shared by the networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def orthogonal(scale: float = 1.0):
    """Orthogonal kernel initializer for [rows, cols] kernels, the same matrix as
    ``nn.initializers.orthogonal(scale)`` for the same key (Q of the QR of a Gaussian matrix with
    diag(R) > 0), computed by Gram-Schmidt with re-orthogonalisation instead of LAPACK: batched QR
    on CPU (vmapped seeds, stacked critics) intermittently deadlocked jaxlib 0.10's thread pool."""

    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 2:
            raise ValueError(f"orthogonal: expected a 2-D kernel shape, got {shape}.")
        rows, cols = shape
        tall = (max(rows, cols), min(rows, cols))
        q = _orthonormal_columns(jax.random.normal(key, tall, jnp.float32))
        return (scale * (q if rows >= cols else q.T)).astype(dtype)

    return init


def _orthonormal_columns(a: Array) -> Array:
    """[m, n] (m >= n) -> the Q of a = QR with positive diag(R): classical Gram-Schmidt, twice."""
    n = a.shape[1]

    def body(j, q):
        v, earlier = q[:, j], (jnp.arange(n) < j).astype(q.dtype)
        for _ in range(2):
            v = v - q @ (earlier * (q.T @ v))
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, n, body, a)


ortho = orthogonal(2.0**0.5)


def stacked(init, num: int):
    """An initializer of [num, *shape] from ``init`` with an independent key per slice."""
    return lambda key, shape, dtype=jnp.float32: jax.vmap(lambda k: init(k, shape, dtype))(jax.random.split(key, num))


def param_count(params) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
