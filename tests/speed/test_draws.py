"""normal_rows.normal: the 16-wide standard normal draw, exact on every path, and kept out of its
consumers' loops by XLA CPU (the reason it exists)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfm_jax._speed import normal_rows

SHAPES = [(16, 6), (100, 6), (4, 6), (1, 6), (6,), (), (3, 5, 7), (0, 6)]


def _reference(key, shape):
    n = math.prod(shape)
    rows = jax.random.normal(key, (max(1, -(-n // 16)), 16))
    return np.asarray(rows).reshape(-1)[:n].reshape(shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_normal_is_the_16_wide_draw(shape):
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(normal_rows.normal(key, shape), _reference(key, shape))
    np.testing.assert_array_equal(jax.jit(normal_rows.normal, static_argnums=1)(key, shape), _reference(key, shape))


def test_normal_under_vmap_and_dtype():
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    batched = jax.jit(jax.vmap(lambda k: normal_rows.normal(k, (16, 6))))(keys)
    assert batched.shape == (5, 16, 6) and batched.dtype == jnp.float32
    for i, key in enumerate(keys):
        np.testing.assert_array_equal(batched[i], _reference(key, (16, 6)))
    assert normal_rows.normal(keys[0], (4, 6), jnp.float16).dtype == jnp.float16
    # different keys, different draws; a standard normal over many entries
    assert not np.array_equal(batched[0], batched[1])
    big = np.asarray(normal_rows.normal(jax.random.PRNGKey(1), (4096, 6)), np.float64)
    assert abs(big.mean()) < 6 / math.sqrt(big.size) and abs(big.var() - 1) < 6 * math.sqrt(2 / big.size)


def test_materialize_is_exact():
    """Bit for bit on finite float32 outside the subnormal range (XLA CPU flushes subnormals in
    every arithmetic op; a normal draw's smallest magnitude is about 1e-7)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 16)) * 10.0 ** rng.integers(-37, 38, (64, 16))).astype(np.float32)
    x[np.abs(x) < np.finfo(np.float32).tiny] = 0.0
    x[0, :4] = [0.0, -3e38, np.finfo(np.float32).tiny, -np.finfo(np.float32).tiny]
    out = np.asarray(jax.jit(normal_rows.materialize)(jnp.asarray(x)))
    np.testing.assert_array_equal(out.view(np.int32)[np.abs(x) > 0], x.view(np.int32)[np.abs(x) > 0])
    np.testing.assert_array_equal(out, x)
