"""Losses: targets against closed forms and explicit formulas, gradients, and a tiny training run."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from gaussian import gaussian_log_prob, posterior

from rfm_jax.method import losses, schedules
from rfm_jax.method.estimators import posterior_mean

MEAN = jnp.array([0.8, -0.4])
COV = jnp.diag(jnp.array([0.3, 0.6]))
LOG_PROB = gaussian_log_prob(MEAN, COV)


def _zero_model(x, t):
    return jnp.zeros_like(x)


@pytest.mark.parametrize("schedule", [schedules.linear(), schedules.cosine()], ids=["linear", "cosine"])
def test_rfm_velocity_target_is_exact_velocity_for_gaussian(schedule):
    """With the optimal estimator on a diagonal Gaussian the target equals the exact velocity
    alpha' mu1 + beta' mu0, and the loss equals mean((v - target)^2)."""
    key, x1 = jax.random.PRNGKey(0), jnp.array([0.5, 0.1])
    v_fn = lambda x, t: 0.1 * x  # noqa: E731
    loss, aux = losses.rfm_velocity_loss(key, v_fn, LOG_PROB, x1, schedule=schedule, num_particles=8, ridge=0.0)
    mu0, mu1, _ = posterior(MEAN, COV, aux.x_t, schedule.alpha(aux.t), schedule.beta(aux.t))
    exact = schedule.d_alpha(aux.t) * mu1 + schedule.d_beta(aux.t) * mu0
    np.testing.assert_allclose(aux.target, exact, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(loss, np.mean((0.1 * np.asarray(aux.x_t) - np.asarray(aux.target)) ** 2), rtol=1e-5)
    assert 0.01 <= float(aux.t) <= 0.99


def test_rfm_noise_and_qne_dqs_targets():
    schedule, key, x1 = schedules.vp(), jax.random.PRNGKey(1), jnp.array([0.2, -0.3])
    _, aux = losses.rfm_noise_loss(key, _zero_model, LOG_PROB, x1, schedule=schedule, num_particles=8, ridge=0.0)
    mu0, _, _ = posterior(MEAN, COV, aux.x_t, schedule.alpha(aux.t), schedule.beta(aux.t))
    np.testing.assert_allclose(aux.target, mu0, atol=1e-4)

    # QNE is the eta = 0 estimate; DQS regresses a score onto -mu0 / beta with eta = 1.
    _, qne = losses.qne_loss(key, _zero_model, LOG_PROB, x1, schedule=schedule, num_particles=32)
    key_est = jax.random.split(key)[1]
    eta0 = posterior_mean(key_est, LOG_PROB, qne.x_t, qne.t, schedule=schedule, num_particles=32, control_variate=0.0)
    np.testing.assert_allclose(qne.target, eta0.noise_mean, atol=1e-6)
    ve = schedules.ve(1e-3, 1.0)
    _, dqs = losses.dqs_loss(key, _zero_model, LOG_PROB, x1, schedule=ve, num_particles=32)
    eta1 = posterior_mean(key_est, LOG_PROB, dqs.x_t, dqs.t, schedule=ve, num_particles=32, control_variate=1.0)
    np.testing.assert_allclose(dqs.target, -eta1.noise_mean / ve.beta(dqs.t), rtol=1e-5)
    # With alpha = 1 the DQS target is the weighted mean gradient sum_i w_i grad log p1(x1^i).
    x0 = jax.random.normal(key_est, (32, 2))
    x1s = dqs.x_t - ve.beta(dqs.t) * x0
    grads = jax.vmap(jax.grad(LOG_PROB))(x1s)
    np.testing.assert_allclose(dqs.target, jnp.exp(eta1.log_weights) @ grads, rtol=1e-4, atol=1e-5)


def test_qsm_target_is_scaled_q_gradient():
    q_fn = lambda a: -jnp.sum((a - 0.3) ** 2)  # noqa: E731
    loss, (t, x_t, target) = losses.qsm_loss(
        jax.random.PRNGKey(2), _zero_model, q_fn, jnp.array([0.1, 0.9]), schedule=schedules.vp(), scale=50.0
    )
    np.testing.assert_allclose(target, -50.0 * (-2.0) * (x_t - 0.3), rtol=1e-5)
    np.testing.assert_allclose(loss, jnp.mean(target**2), rtol=1e-5)


def test_actor_loss_gradient_reaches_model_only():
    """d loss / d theta flows through the model alone: not through the endpoint x1 (an on-policy
    sample that only places x_t), nor through the target (log_prob depends on theta here too)."""
    schedule, key = schedules.linear(), jax.random.PRNGKey(3)

    def loss_fn(theta):
        x1 = theta * jnp.array([0.5, 0.1])  # as if sampled from the policy being trained
        log_prob = gaussian_log_prob(theta * MEAN, COV)
        return losses.rfm_velocity_loss(key, lambda x, t: theta * x, log_prob, x1, schedule=schedule, num_particles=16)

    theta = 0.7
    _, aux = loss_fn(theta)
    x_t, target = np.asarray(aux.x_t, np.float64), np.asarray(aux.target, np.float64)
    want = np.mean(2 * (theta * x_t - target) * x_t)
    np.testing.assert_allclose(jax.grad(lambda th: loss_fn(th)[0])(theta), want, rtol=1e-4)


def test_critic_td_loss_min_target_and_discount():
    q_tm1, target_q = jnp.array([1.0, 2.0]), jnp.array([3.0, 5.0])
    loss, aux = losses.critic_td_loss(q_tm1, 0.5, 1.0, target_q, gamma=0.9)
    y = 0.5 + 0.9 * 3.0
    np.testing.assert_allclose(aux.target, y)
    np.testing.assert_allclose(loss, ((1 - y) ** 2 + (2 - y) ** 2) / 2, rtol=1e-6)
    # A time-limit end keeps discount 1 (bootstraps); a true terminal has discount 0.
    _, terminal = losses.critic_td_loss(q_tm1, 0.5, 0.0, target_q, gamma=0.9)
    np.testing.assert_allclose(terminal.target, 0.5)
    # Soft backup and no gradient through the target.
    _, soft = losses.critic_td_loss(q_tm1, 0.5, 1.0, target_q, gamma=0.9, log_prob_t=-2.0, temperature=0.1)
    np.testing.assert_allclose(soft.target, 0.5 + 0.9 * (3.0 + 0.2), rtol=1e-6)
    grad_target = jax.grad(lambda tq: losses.critic_td_loss(q_tm1, 0.5, 1.0, tq, gamma=0.9)[0])(target_q)
    np.testing.assert_array_equal(grad_target, 0.0)
    with pytest.raises(ValueError, match="`q_tm1`"):
        losses.critic_td_loss(jnp.zeros((4, 2)), 0.5, 1.0, target_q, gamma=0.9)


def test_sac_losses():
    np.testing.assert_allclose(losses.sac_actor_loss(jnp.array([1.0, 3.0]), -2.0, temperature=0.5), -1.0 - 1.0)
    grad_temp = jax.grad(lambda a: losses.sac_actor_loss(jnp.array([1.0, 3.0]), -2.0, temperature=a))(0.5)
    np.testing.assert_array_equal(grad_temp, 0.0)
    # Entropy 0.5 below a target of 1.0: the gradient descent step must raise the temperature.
    grad = jax.grad(losses.sac_temperature_loss)(jnp.log(0.2), -0.5, target_entropy=1.0)
    assert grad < 0
    grad = jax.grad(losses.sac_temperature_loss)(jnp.log(0.2), -2.0, target_entropy=1.0)
    assert grad > 0


class _Velocity(nn.Module):
    @nn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, jnp.atleast_1d(t)])
        h = nn.gelu(nn.Dense(32)(h))
        h = nn.gelu(nn.Dense(32)(h))
        return nn.Dense(x.shape[-1])(h)


def test_rfm_trains_a_flow_onto_a_gaussian_boltzmann_target():
    """A tiny flow trained for 400 steps with endpoints from its own samples moves its sample mean
    and spread to the target N(m, S) (no target samples are ever used). Near t = 0 the posterior is
    much narrower than the N(0, I) proposal and the SNIS weights collapse, so this uses t_min 0.05
    and 64 particles on a broad target."""
    mean, cov = jnp.array([1.0, -0.5]), jnp.diag(jnp.array([0.8, 1.5]))
    log_prob, schedule, net, batch, t_min = gaussian_log_prob(mean, cov), schedules.linear(), _Velocity(), 128, 0.05
    params = net.init(jax.random.PRNGKey(0), jnp.zeros(2), 0.5)
    opt = optax.adam(3e-3)

    def sample(params, key, n):
        x = jax.random.normal(key, (n, 2))
        v = lambda x, t: net.apply(params, x, t)  # noqa: E731
        return jax.vmap(lambda x0: schedules.sample_euler(v, x0, num_steps=8, t_start=t_min, t_end=1 - t_min))(x)

    def step(carry, key):
        params, opt_state = carry
        key_x1, key_loss = jax.random.split(key)
        x1 = jax.lax.stop_gradient(sample(params, key_x1, batch))

        def loss_fn(p):
            def one(k, x):
                v = lambda x, t: net.apply(p, x, t)  # noqa: E731
                return losses.rfm_velocity_loss(k, v, log_prob, x, schedule=schedule, num_particles=64, t_min=t_min)[0]

            return jnp.mean(jax.vmap(one)(jax.random.split(key_loss, batch), x1))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), loss

    train = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))
    before = np.asarray(sample(params, jax.random.PRNGKey(2), 4000))
    (params, _), _ = train((params, opt.init(params)), jax.random.split(jax.random.PRNGKey(1), 400))
    after = np.asarray(sample(params, jax.random.PRNGKey(2), 4000))
    assert np.abs(before.mean(0) - mean).max() > 0.4  # the untrained flow is far off
    np.testing.assert_allclose(after.mean(0), mean, atol=0.2)
    np.testing.assert_allclose(after.std(0), np.sqrt(np.diag(cov)), rtol=0.1)


def test_noisy_point_time_range_and_marginal():
    """t ~ U[t_min, t_max] and x_t = alpha x1 + beta x0 has the right mean and spread."""
    schedule, x1 = schedules.cosine(), jnp.array([1.0, -2.0])
    keys = jax.random.split(jax.random.PRNGKey(4), 20_000)
    t, x_t = jax.vmap(lambda k: losses.noisy_point(k, x1, schedule=schedule, t_min=0.2, t_max=0.5))(keys)
    assert float(t.min()) >= 0.2 and float(t.max()) <= 0.5
    assert float(t.min()) < 0.21 and float(t.max()) > 0.49
    x0 = (x_t - schedule.alpha(t)[:, None] * x1) / schedule.beta(t)[:, None]
    np.testing.assert_allclose(x0.mean(0), 0.0, atol=5 / np.sqrt(20_000))
    np.testing.assert_allclose(x0.std(0), 1.0, rtol=0.03)
    t_default, _ = losses.noisy_point(keys[0], x1, schedule=schedule, t_min=0.3)
    assert 0.3 <= float(t_default) <= 0.7
