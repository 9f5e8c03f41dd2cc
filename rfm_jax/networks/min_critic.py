"""min_k Q_k(s, a) over a ``CriticEnsemble`` and its action gradient through the argmin critic only
(a CPU speed device next to the critic whose parameters it reads; ``RFM_JAX_PLAIN=1`` gives autodiff).

    q_min(s, a) = min_k Q_k(s, a),      grad_a q_min = grad_a Q_k*(s, a),   k* = argmin_k Q_k(s, a)

Autodiff of ``jnp.min`` back-propagates a one-hot cotangent through every critic, so K - 1 of the
K backward passes multiply zeros.  ``q_min`` is the plain forward pass with a custom JVP whose
tangent is grad_a q_min . da, and that gradient comes from ``value_and_grad_rows``: the K forward
passes on all rows, then one backward pass per row through its argmin critic.  To keep those
backward passes dense matmuls, the rows are put in order of k* (each critic's rows padded to whole
blocks of ``BLOCK_ROWS``) and every block is multiplied by its own critic's transposed weights.

Rows from every vmap level are pooled: ``value_and_grad_rows`` takes groups of rows that share a
state, obs [G, O] and a [G, P, A], and its vmap rule (``jax.custom_batching.custom_vmap``) folds a
batched axis into G (obs batched) or P (obs shared), so the particles of a posterior chunk and the
states of a batch reach it as one [G, P] call.  A batched parameter axis (vmapped seeds) stays a
plain vmap.  Same numbers as autodiff of ``jnp.min`` to float32 rounding; at an exact tie autodiff
splits the gradient between the tied critics and this takes the first.  Only gradients w.r.t. a
are defined (a tangent on the parameters or s raises).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rfm_jax._speed import plain
from rfm_jax.networks.critic import CriticEnsemble

Array = jax.Array
BLOCK_ROWS = 512  # rows per block of the sorted backward pass


def _module(params) -> CriticEnsemble:
    return CriticEnsemble.from_params(params)


def _sorted_slots(k_star: Array, num_critics: int, block: int):
    """Row order by critic: (src [C] row index of every slot, pos [R] slot of every row, crit [C // block]
    critic of every block), with each critic's rows starting on a block boundary; C = (ceil(R / block) +
    K - 1) * block slots (unused slots point at row 0)."""
    rows = k_star.shape[0]
    num_blocks = -(-rows // block) + num_critics - 1
    one_hot = k_star[:, None] == jnp.arange(num_critics)  # [R, K]
    counts = jnp.sum(one_hot, axis=0)
    start = jnp.concatenate([jnp.zeros((1,), counts.dtype), jnp.cumsum(-(-counts // block))[:-1]]) * block
    rank = jnp.sum(jnp.where(one_hot, jnp.cumsum(one_hot, axis=0) - 1, 0), axis=1)
    pos = start[k_star] + rank
    src = jnp.zeros((num_blocks * block,), jnp.int32).at[pos].set(jnp.arange(rows, dtype=jnp.int32))
    crit = jnp.sum(jnp.arange(num_blocks)[:, None] * block >= start[None, 1:], axis=1)
    return src, pos, crit


def _value_and_grad_impl(params, obs: Array, action: Array):
    """obs [G, O], action [G, P, A] -> (q_min [G, P], grad_a q_min [G, P, A]) (module docstring)."""
    layers = CriticEnsemble.layers(params)
    num_critics, obs_dim = layers[0][0].shape[0], obs.shape[-1]
    groups, particles, action_dim = action.shape
    rows, depth = groups * particles, len(layers) - 1
    q, state = _module(params).apply(params, obs[:, None], action, mutable="intermediates")
    q = q.reshape(rows, num_critics)  # [R, K]
    pre_flat = state["intermediates"]["pre_activations"]  # critic-major, each [G, P, width]
    pre = [[pre_flat[k * depth + j].reshape(rows, -1) for j in range(depth)] for k in range(num_critics)]
    k_star = jnp.argmin(q, axis=-1)
    src, pos, crit = _sorted_slots(k_star, num_critics, BLOCK_ROWS)
    k_src = k_star[src]
    num_blocks = crit.shape[0]

    def argmin_active(j):  # the argmin critic's layer-j ReLU derivative, rows in slot order [C, width]
        m = pre[0][j][src] > 0
        for k in range(1, num_critics):
            m = jnp.where((k_src == k)[:, None], pre[k][j][src] > 0, m)
        return m

    def blocked_dot(delta, kernel):  # delta [C, m] @ kernel[crit].T (per block): kernel [K, n, m] -> [C, n]
        out = jnp.einsum("brm,bnm->brn", delta.reshape(num_blocks, BLOCK_ROWS, -1), kernel[crit])
        return out.reshape(num_blocks * BLOCK_ROWS, -1)

    w_out = layers[-1][0][:, :, 0]  # [K, width]
    delta = jnp.where(argmin_active(depth - 1), w_out[k_src], 0.0)
    for j in range(depth - 1, 0, -1):
        delta = jnp.where(argmin_active(j - 1), blocked_dot(delta, layers[j][0]), 0.0)
    grad = blocked_dot(delta, layers[0][0][:, obs_dim:])[pos]
    q_min = jnp.min(q, axis=-1)
    return q_min.reshape(groups, particles), grad.reshape(groups, particles, action_dim)


@jax.custom_batching.custom_vmap
def value_and_grad_rows(params, obs: Array, action: Array):
    """obs [G, O], action [G, P, A] -> (q_min [G, P], grad_a q_min [G, P, A]); the rows of every
    vmap level are pooled into one call (module docstring)."""
    return _value_and_grad_impl(params, obs, action)


@value_and_grad_rows.def_vmap
def _pool_rows(axis_size, in_batched, params, obs, action):
    """vmap rule: fold the batch axis into the groups (obs batched) or the particles (obs shared)."""
    params_batched, obs_batched, action_batched = in_batched
    if any(jax.tree.leaves(params_batched)):  # other parameters per batch entry (seeds): a plain vmap
        params = jax.tree.map(lambda x, b: x if b else jnp.broadcast_to(x, (axis_size, *x.shape)), params,
                              params_batched)
        in_axes = (0, 0 if obs_batched else None, 0 if action_batched else None)
        return jax.vmap(_value_and_grad_impl, in_axes)(params, obs, action), (True, True)
    if not action_batched:
        action = jnp.broadcast_to(action, (axis_size, *action.shape))
    b, (g, p, a) = axis_size, action.shape[1:]
    if obs_batched:  # [b, g, ...] -> b * g groups
        q, grad = value_and_grad_rows(params, obs.reshape(b * g, -1), action.reshape(b * g, p, a))
        return (q.reshape(b, g, p), grad.reshape(b, g, p, a)), (True, True)
    q, grad = value_and_grad_rows(params, obs, jnp.moveaxis(action, 0, 1).reshape(g, b * p, a))
    q, grad = q.reshape(g, b, p), grad.reshape(g, b, p, a)
    return (jnp.moveaxis(q, 1, 0), jnp.moveaxis(grad, 1, 0)), (True, True)


def q_min(params, obs: Array, action: Array) -> Array:
    """min_k Q_k(obs [O], action [A]) -> [] of a ``CriticEnsemble``'s parameters; its derivative
    w.r.t. the action goes through the argmin critic only (module docstring).  Under
    ``RFM_JAX_PLAIN=1`` it is ``jnp.min`` with plain autodiff."""
    if plain():
        return _q_min_plain(params, obs, action)
    return _q_min(params, obs, action)


def _q_min_plain(params, obs: Array, action: Array) -> Array:
    return jnp.min(_module(params).apply(params, obs, action), axis=-1)


_q_min = jax.custom_jvp(_q_min_plain)


def _q_min_jvp(primals, tangents):
    params, obs, action = primals
    d_params, d_obs, d_action = tangents
    if not all(isinstance(t, jax.custom_derivatives.SymbolicZero) for t in (*jax.tree.leaves(d_params), d_obs)):
        raise NotImplementedError("min_critic.q_min: only derivatives w.r.t. the action are defined.")
    q, grad = value_and_grad_rows(params, obs[None], action[None, None])
    if isinstance(d_action, jax.custom_derivatives.SymbolicZero):
        return q[0, 0], jnp.zeros_like(q[0, 0])
    return q[0, 0], jnp.dot(grad[0, 0], d_action)


_q_min.defjvp(_q_min_jvp, symbolic_zeros=True)
