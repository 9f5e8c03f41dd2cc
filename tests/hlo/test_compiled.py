"""Assertions on compiled XLA programs (CPU): what the speed devices and the step's layout must
compile to.  The numbers of the same functions are tested beside their modules; these check the
form, so they hold on XLA's CPU backend with rfm_jax's defaults (not under ``RFM_JAX_PLAIN=1``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfm_jax._speed import normal_rows, plain
from rfm_jax.infra import runtime

pytestmark = [pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU programs"),
              pytest.mark.skipif(plain(), reason="the speed devices are off under RFM_JAX_PLAIN=1")]
OBS, ACT = 17, 6  # cheetah-run


def test_cpu_program_computes_the_draw_in_its_own_loop():
    """The identity dot survives XLA's simplifier: the draw reaches its consumer as a dot result."""
    def consumer(key, u):
        x = u[None, :] - 0.5 * normal_rows.normal(key, (16, 6))
        return jax.nn.softplus(-2.0 * x)

    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    text = jax.jit(jax.vmap(consumer, (0, None))).lower(keys, jnp.ones(6)).compile().as_text()
    assert " dot(" in text


@pytest.mark.parametrize("thin", [False, True])
def test_kernel_matmul_weight_gradient_is_one_kernel_order_product(thin):
    """With one seed, XLA drops the seed axis and compiles autodiff's weight gradient of a plain dot
    as an [N, K] product; ``kernel_matmul``'s is one [K, N] product."""
    from rfm_jax._speed.matmuls import kernel_matmul

    k_in, n_out = (ACT, 32) if thin else (OBS, 32)
    loss = lambda x, w: jnp.sum(jnp.sin(kernel_matmul(x, w, thin)))  # noqa: E731
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 7, k_in))
    w = jax.random.normal(jax.random.PRNGKey(1), (1, k_in, n_out))
    hlo = jax.jit(jax.vmap(jax.grad(loss, argnums=1))).lower(x, w).compile().as_text()
    assert f"f32[{k_in},{n_out}]{{1,0}} dot(" in hlo, "the weight gradient is not a [K, N] product"
    assert f"f32[{n_out},{k_in}]{{1,0}} dot(" not in hlo


@pytest.mark.parametrize("features", [1, 6, 8, 13])
def test_padded_dense_compiles_a_product_padded_to_8_columns(features):
    """One output column stays a matrix-vector product."""
    from rfm_jax._speed.matmuls import PaddedDense
    from rfm_jax.networks.init import ortho

    x = jax.random.normal(jax.random.PRNGKey(1), (64, 256))
    padded = PaddedDense(features, kernel_init=ortho)
    params = padded.init(jax.random.PRNGKey(0), x)
    hlo = jax.jit(padded.apply).lower(params, x).compile().as_text()
    width = features if features == 1 else -(-features // 8) * 8
    assert f"f32[64,{width}]" in hlo, f"no [64, {width}] product in the compiled head"


@pytest.mark.slow
def test_train_step_writes_the_buffer_in_place():
    """The compiled train step copies no replay-sized array (it did: a 250k-slot buffer cost 5 ms a step)."""
    from rfm_jax.agents import make_agent
    from rfm_jax.training.program import compile_seeds, empty_transitions, make_step_fns
    from rfm_jax.training.sweeps import expand, hyper_per_run, run_keys

    capacity = 4099  # a size no other array in the step has
    agent = make_agent("rfm", obs_dim=3, action_dim=2, num_posterior_particles=4, num_train_particles=2,
                       num_act_particles=2, num_eval_particles=2, num_ode_steps=2, actor_width=16,
                       critic_hidden=(16, 16))
    fns = compile_seeds(make_step_fns(agent, obs_dim=3, action_dim=2, num_envs=1, replay_capacity=capacity,
                                      batch_size=8))
    runs = expand([0], None)
    state = fns.init(run_keys(runs), hyper_per_run(agent.hyper, runs))
    transitions = jax.tree.map(lambda x: x[None], empty_transitions(1, 3, 2))
    hlo = fns.train_step.lower(state, transitions, jnp.ones((1, 1), bool), jnp.zeros((1, 1, 3))).compile().as_text()
    copies = [line for line in hlo.splitlines() if f",{capacity}" in line and " copy(" in line]
    assert not copies, copies


def test_unrolled_threefry_gives_the_same_bits_without_a_loop_on_cpu():
    """The lowering configure_xla_cpu registers (conftest calls it) draws the same bits as JAX's
    rolled CPU loop, with no while loop left in the compiled program."""
    import jax
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32 as threefry

    def draw(key):
        keys = jax.random.split(key, 300)
        return jax.vmap(lambda k: jax.random.normal(k, (7, 16)))(keys), jax.random.uniform(keys[3], (5,))

    key = jax.random.PRNGKey(3)
    assert runtime.unroll_threefry_on_cpu()
    unrolled = jax.jit(lambda k: draw(k)).lower(key).compile()
    try:
        mlir.register_lowering(threefry.threefry2x32_p, threefry._threefry2x32_cpu_lowering_rule, platform="cpu")
        rolled = jax.jit(lambda k: draw(k)).lower(key).compile()
    finally:
        runtime.unroll_threefry_on_cpu()
    assert " while(" in rolled.as_text() and " while(" not in unrolled.as_text()
    for a, b in zip(jax.tree.leaves(unrolled(key)), jax.tree.leaves(rolled(key)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
