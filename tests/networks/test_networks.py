"""The reference networks: parameter count, orthogonal(sqrt 2) init, embedding frequencies, and the
shared first layer (state / lambda columns once per state, time columns once per step) equal to
the plain concatenation under jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfm_jax._speed.trig import sin_cos
from rfm_jax.networks import CriticEnsemble, PolicyNet, param_count, sinusoidal_embedding

OBS, ACT = 17, 6  # cheetah-run


def _actor(block="reference", width=256):
    net = PolicyNet(OBS, ACT, width=width, block=block)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros(OBS), jnp.zeros(ACT), jnp.zeros(()), jnp.ones(()))
    return net, params


def test_reference_actor_has_the_reference_parameter_count():
    net, params = _actor()
    # (17 + 6 + 2 * 128) * 256 + 256  +  2 * (256 * 256 + 256)  +  256 * 6 + 6
    assert param_count(params) == 204_806
    critics = CriticEnsemble(2, (256, 256)).init(jax.random.PRNGKey(0), jnp.zeros(OBS), jnp.zeros(ACT))
    assert param_count(critics) == 2 * ((OBS + ACT) * 256 + 256 + 256 * 256 + 256 + 256 + 1)


def test_kernels_are_orthogonal_with_gain_sqrt2_and_biases_zero():
    _, params = _actor()
    p = params["params"]
    for kernel in (p["block_0"]["kernel"], p["block_1"]["kernel"]):
        np.testing.assert_allclose(kernel.T @ kernel, 2.0 * np.eye(256), atol=1e-4)
    k_in = p["kernel_in"]  # [279, 256]: orthonormal columns times sqrt 2
    np.testing.assert_allclose(k_in.T @ k_in, 2.0 * np.eye(256), atol=1e-4)
    k_out = p["head"]["kernel"]  # [256, 6]: orthonormal columns
    np.testing.assert_allclose(k_out.T @ k_out, 2.0 * np.eye(ACT), atol=1e-4)
    assert all(float(jnp.abs(b).max()) == 0.0 for b in (p["bias_in"], p["block_0"]["bias"], p["head"]["bias"]))
    critic = CriticEnsemble(2, (256, 256)).init(jax.random.PRNGKey(0), jnp.zeros(OBS), jnp.zeros(ACT))
    w2 = critic["params"]["kernel_1"]  # [K, 256, 256]
    for k in range(2):
        np.testing.assert_allclose(w2[k].T @ w2[k], 2.0 * np.eye(256), atol=1e-4)
    assert not np.allclose(w2[0], w2[1])  # independent critics


def test_embedding_frequencies_run_from_one_to_one_thousandth():
    emb = sinusoidal_embedding(jnp.float32(1.0), 128)
    freqs = np.exp(-np.log(1000.0) / 63 * np.arange(64))
    np.testing.assert_allclose(emb, np.concatenate([np.sin(freqs), np.cos(freqs)]), rtol=1e-6, atol=1e-6)
    assert freqs[0] == 1.0 and np.isclose(freqs[-1], 1e-3)


@pytest.mark.parametrize("limit", [1.0, 4.0, 100.0, 3e4])
def test_sin_cos_is_within_float32_rounding_of_the_exact_values(limit):
    rng = np.random.default_rng(0)
    quadrant_edges = np.arange(-8, 9) * np.pi / 4  # where r crosses +-pi/4 and k changes
    x = np.concatenate([rng.uniform(-limit, limit, 50_000), quadrant_edges[np.abs(quadrant_edges) <= limit],
                        np.nextafter(np.float32(np.pi / 4), np.float32(1)) * np.array([1, -1, 3, -3]),
                        [0.0, 1e-30, -1e-7]]).astype(np.float32)
    sin, cos = jax.jit(sin_cos)(x)
    exact = x.astype(np.float64)
    ulp = float(np.spacing(np.float32(1.0)))  # 2^-23 = 1.19e-7; measured error 6.8e-8, jnp.sin's 3.2e-8
    assert np.max(np.abs(np.asarray(sin, np.float64) - np.sin(exact))) <= 1.2 * ulp
    assert np.max(np.abs(np.asarray(cos, np.float64) - np.cos(exact))) <= 1.2 * ulp
    tiny = np.abs(x) < 1e-3  # relative accuracy near zero: sin x = x to rounding
    np.testing.assert_allclose(np.asarray(sin)[tiny], x[tiny], rtol=2 * ulp, atol=0)
    # vmapped over scalars (another compiled program: FMA contraction may differ in the last bit)
    sin_v, cos_v = jax.jit(jax.vmap(sin_cos))(jnp.asarray(x[:64]))
    np.testing.assert_allclose(sin_v, np.sin(exact[:64]), rtol=0, atol=1.2 * ulp)
    np.testing.assert_allclose(cos_v, np.cos(exact[:64]), rtol=0, atol=1.2 * ulp)


def test_embedding_matches_jnp_sin_cos_to_float32_rounding():
    t = jax.random.uniform(jax.random.PRNGKey(3), (256,))
    emb = jax.jit(lambda t: sinusoidal_embedding(t, 128))(t)
    angles = t[:, None] * jnp.exp(-jnp.log(1000.0) / 63 * jnp.arange(64))
    np.testing.assert_allclose(emb, jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1), rtol=0, atol=2e-7)


@pytest.mark.parametrize("block", ["reference", "prenorm"])
def test_shared_first_layer_equals_the_concatenation(block):
    net, params = _actor(block)
    key_obs, key_x, key_t = jax.random.split(jax.random.PRNGKey(1), 3)
    obs = 2.0 * jax.random.normal(key_obs, (8, OBS))
    x = jax.random.normal(key_x, (8, 32, ACT))
    t = jax.random.uniform(key_t, (8,))

    def shared(obs_i, x_i, t_i):  # one state, 32 particles, one time
        cond = net.apply(params, obs_i, jnp.float32(0.02), method=net.condition)
        return net.apply(params, cond, x_i, t_i, method=net.from_condition)

    def plain(obs_i, x_i, t_i):
        return net.apply(params, obs_i, x_i, t_i, jnp.float32(0.02))

    fast = jax.jit(jax.vmap(shared))(obs, x, t)
    slow = jax.jit(jax.vmap(plain))(obs, x, t)
    assert fast.shape == (8, 32, ACT)
    scale = float(jnp.abs(slow).max())
    np.testing.assert_allclose(fast, slow, atol=1e-5 * scale, rtol=1e-5)
    # and the concatenation is what it claims to be: a Dense on [s, u, emb t, emb lambda]
    p = params["params"]
    row = jnp.concatenate([obs[0], x[0, 0], sinusoidal_embedding(t[0], 128), sinusoidal_embedding(0.02, 128)])
    h0 = row @ p["kernel_in"] + p["bias_in"]
    if block == "reference":
        h = jax.nn.gelu(h0)
        for j in range(2):
            h = h + jax.nn.gelu(h @ p[f"block_{j}"]["kernel"] + p[f"block_{j}"]["bias"])
        np.testing.assert_allclose(h @ p["head"]["kernel"] + p["head"]["bias"], slow[0, 0], atol=1e-5 * scale)


def test_critic_split_first_layer_equals_the_concatenation():
    """One critic at a time, the action columns by thin_matmul: equal to the plain MLP on [s, a],
    and its input gradient (what the posterior's control variates use) equal to the plain one's."""
    critic = CriticEnsemble(2, (64, 64))
    params = critic.init(jax.random.PRNGKey(0), jnp.zeros(OBS), jnp.zeros(ACT))
    obs = jax.random.normal(jax.random.PRNGKey(1), (OBS,))
    actions = jnp.tanh(jax.random.normal(jax.random.PRNGKey(2), (10, ACT)))
    q = jax.jit(critic.apply)(params, obs, actions)  # one state, 10 actions
    assert q.shape == (10, 2)
    p = params["params"]
    assert p["kernel_0"].shape == (2, OBS + ACT, 64) and p["bias_2"].shape == (2, 1)

    def plain(action, k):
        h = jax.nn.relu(jnp.concatenate([obs, action]) @ p["kernel_0"][k] + p["bias_0"][k])
        h = jax.nn.relu(h @ p["kernel_1"][k] + p["bias_1"][k])
        return (h @ p["kernel_2"][k] + p["bias_2"][k])[0]

    for k in range(2):
        np.testing.assert_allclose(q[:, k], jax.vmap(plain, (0, None))(actions, k), rtol=1e-5, atol=1e-5)
    grad = jax.jit(jax.vmap(jax.grad(lambda a: jnp.min(critic.apply(params, obs, a)))))(actions)
    k_min = jnp.argmin(q, axis=-1)
    ref = jnp.stack([jax.grad(plain)(a, int(k)) for a, k in zip(actions, k_min, strict=True)])
    np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-5)


def test_thin_matmul_equals_the_dot_with_the_dot_derivatives():
    from rfm_jax._speed.matmuls import thin_matmul

    x = jax.random.normal(jax.random.PRNGKey(0), (5, 7, ACT))
    w = jax.random.normal(jax.random.PRNGKey(1), (ACT, 32))
    np.testing.assert_allclose(jax.jit(thin_matmul)(x, w), x @ w, rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    got = jax.grad(loss(thin_matmul), argnums=(0, 1))(x, w)
    want = jax.grad(loss(jnp.matmul), argnums=(0, 1))(x, w)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    jvp = jax.jvp(thin_matmul, (x, w), (x, w))[1]  # forward mode too: d(x w) = dx w + x dw
    np.testing.assert_allclose(jvp, 2 * x @ w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("thin", [False, True])
def test_kernel_matmul_is_the_dot_with_its_weight_gradient_in_kernel_order(thin):
    """Value and both gradients equal the plain dot's (leading axes, jit, a vmap over seeds that
    batches x and w).  With one seed, XLA drops the seed axis and compiles autodiff's weight
    gradient of a plain dot as an [N, K] product; ``kernel_matmul``'s is one [K, N] product
    (tests/hlo/test_compiled.py)."""
    from rfm_jax._speed.matmuls import kernel_matmul

    k_in, n_out = (ACT, 32) if thin else (OBS, 32)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    ours = lambda x, w: kernel_matmul(x, w, thin)  # noqa: E731
    for seeds in (3, 1):
        x = jax.random.normal(jax.random.PRNGKey(0), (seeds, 5, 7, k_in))
        w = jax.random.normal(jax.random.PRNGKey(1), (seeds, k_in, n_out))
        np.testing.assert_allclose(jax.jit(ours)(x[0], w[0]), x[0] @ w[0], rtol=1e-5, atol=1e-5)
        grad = jax.jit(jax.vmap(jax.grad(loss(ours), argnums=(0, 1))))
        want = jax.vmap(jax.grad(loss(jnp.matmul), argnums=(0, 1)))(x, w)
        for g, r in zip(grad(x, w), want, strict=True):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("features", [1, 6, 8, 13])
def test_padded_dense_is_nn_dense_to_float32_rounding(features):
    """Same parameter tree and initial values as nn.Dense for a key; the output and its gradients
    agree to float32 rounding under jit and vmap (the compiled padding: tests/hlo/test_compiled.py)."""
    import flax.linen as nn

    from rfm_jax._speed.matmuls import PaddedDense
    from rfm_jax.networks.init import ortho

    x = jax.random.normal(jax.random.PRNGKey(1), (3, 64, 256))
    dense, padded = nn.Dense(features, kernel_init=ortho), PaddedDense(features, kernel_init=ortho)
    params = dense.init(jax.random.PRNGKey(0), x[0])
    padded_params = padded.init(jax.random.PRNGKey(0), x[0])
    assert jax.tree.structure(params) == jax.tree.structure(padded_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(padded_params), strict=True):
        np.testing.assert_array_equal(a, b)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias
    want = jax.vmap(dense.apply, (None, 0))(params, x)
    got = jax.jit(jax.vmap(padded.apply, (None, 0)))(params, x)
    assert got.shape == want.shape == (3, 64, features)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))  # noqa: E731
    for g, r in zip(jax.tree.leaves(jax.jit(jax.grad(loss(padded)))(params, x[0])),
                    jax.tree.leaves(jax.grad(loss(dense))(params, x[0])), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_the_reference_actor_head_is_padded_dense():
    from rfm_jax._speed.matmuls import PaddedDense

    net, params = _actor()
    assert params["params"]["head"]["kernel"].shape == (256, ACT)
    assert isinstance(net.bind(params).head, PaddedDense)


@pytest.mark.parametrize("shape", [(279, 256), (256, 256), (256, 6), (6, 64)])
def test_orthogonal_init_equals_flax_qr_init_for_the_same_key(shape):
    import flax.linen as nn

    from rfm_jax.networks import orthogonal

    key = jax.random.PRNGKey(3)
    ours = jax.jit(orthogonal(2.0**0.5), static_argnums=1)(key, shape)
    flax_qr = nn.initializers.orthogonal(2.0**0.5)(key, shape)
    np.testing.assert_allclose(ours, flax_qr, atol=2e-4)
    batched = jax.vmap(orthogonal(1.0), (0, None))(jax.random.split(key, 3), shape)  # no LAPACK under vmap
    assert batched.shape == (3, *shape) and np.all(np.isfinite(batched))


def test_update_macs_match_method_and_qne_skips_the_input_gradient():
    """docs/method.md 7.2 at the reference settings: the authors' layout (43.4 G), the shared first layer
    (31.4 G) and rfm_jax's argmin-only input gradient (29.7 G); QNE's eta = 0 posterior is forward only."""
    from rfm_jax.infra.macs import COSTS

    settings = dict(obs_dim=17, action_dim=6, batch_size=256, num_posterior_particles=100, num_train_particles=32,
                    num_act_particles=32, num_ode_steps=10, actor_width=256, actor_blocks=2)
    rfm, qne = COSTS["rfm"](**settings), COSTS["qne"](**settings)
    assert round(rfm["total"] / 1e9, 1) == 29.7 and round(rfm["posterior"] / 1e9, 2) == 5.17
    assert round(COSTS["rfm"](**settings, shared_first_layer=False)["total"] / 1e9, 1) == 43.4
    state_part = 256 * 2 * 17 * 256  # the critics' state columns, once per state
    both_critics = 256 * 100 * 2 * 2 * (6 * 256 + 256 * 256 + 256) + state_part  # forward + both input gradients
    assert round(both_critics / 1e9, 2) == 6.90
    assert round((rfm["total"] - rfm["posterior"] + both_critics) / 1e9, 1) == 31.4
    assert (rfm["posterior"] - state_part) * 2 == (qne["posterior"] - state_part) * 3  # forward + 1 of 2 backwards
    assert qne["sampling"] == rfm["sampling"]
