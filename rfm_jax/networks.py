"""Networks (flax linen): the flow / diffusion policy network, a critic ensemble and a
tanh-Gaussian actor.  Each acts on one example; leading batch axes broadcast numpy-style.

VelocityNet, the reference actor (docs/method.md section 7.1), v(s, u_t, t, lambda) -> [A]:

    x   = [s (O), u_t (A), emb(t) (E), emb(lambda) (E)],   emb(x) = [sin(x f_k), cos(x f_k)],
          f_k = exp(-k ln(1000) / (E/2 - 1)), k = 0 .. E/2 - 1   (raw t and raw lambda)
    h   = GELU(W_in x + b_in)                                   W_in: [O + A + 2E, width]
    h  <- h + GELU(W_j h + b_j)          j = 1 .. num_blocks    ("reference" block)
    out = W_out h + b_out

Every kernel is orthogonal(sqrt 2), every bias zero.  At O = 17, A = 6, E = 128, width 256 and two
blocks this has 204,806 parameters.  ``block="prenorm"`` swaps in h <- h + W'GELU(W LN(h)) blocks
and a GELU(LN(h)) before the head (no GELU after the input layer).

W_in x is linear, so W_in x = W_u u_t + (W_s s + W_lam emb(lambda) + b_in) + W_t emb(t): the
sampler computes ``condition`` (the bracket, [width]) once per state and W_t emb(t) once per ODE
step, and only W_u u_t ([A] -> [width]) per particle.  ``__call__`` is the plain concatenation.
The head is a ``PaddedDense``: W_out's A columns padded with zeros to a multiple of 8 for the
product (faster on XLA's CPU dot), the same parameters as ``nn.Dense``.

CriticEnsemble: K independent MLPs [s, a] -> ReLU layers -> 1 (each parameter stacked on a leading
K axis), orthogonal(sqrt 2) kernels; the first layer's state columns are applied to s alone, so
particles at one state share them (exact algebra again).  Output Q [..., K].

Layout for XLA on CPU (same numbers to float32 rounding; the products are in ``rfm_jax.products``):
the critics are applied one after another with plain 2-D matmuls (a vmap over K makes batched
dots with transposes between the layers), and the A input columns of an action (the critics' a,
the policy's u_t) go through ``thin_matmul``, a sum of A broadcast products that XLA fuses with the
bias and the activation, where a dot with an inner dimension of 6 is a separate, slow GEMM.  The
critics' first layer is ``kernel_matmul``, whose weight gradient is x^T g in the kernel's [in, out]
order (reverse mode only).  Derivatives stay dots.  README (speed) has the measured effect.

TanhGaussianActor: ReLU MLP -> (mean [A], log_std [A]) with log_std in [-5, 2].
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rfm_jax import draws
from rfm_jax.estimators import log_one_minus_tanh_sq
from rfm_jax.products import THIN_ROWS, PaddedDense, input_matmul, kernel_matmul

Array = jax.Array
BLOCKS = ("reference", "prenorm")


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


# pi / 2 in three float32 parts (8, 16 and 24 significant bits) for the argument reduction.
_HALF_PI_PARTS = (1.5703125, 4.837512969970703125e-4, 7.549789954891882e-8)


def sin_cos(x: Array) -> tuple[Array, Array]:
    """(sin x, cos x) of a float32 array, elementwise, in vectorisable arithmetic (XLA's CPU
    backend calls a scalar routine per element for ``jnp.sin`` and ``jnp.cos``: 1.55 against 0.25 ms
    for both over 262k elements on README's 2-core CPU).

    x = k pi/2 + r with k = round(2x / pi) and r in [-pi/4, pi/4] (pi/2 in three parts, so k pi/2
    is exact for |k| < 2^15), Taylor series of sin r to r^11 and cos r to r^12 (truncation below
    1e-11), then the quadrant k mod 4.  Absolute error below 1.2 * 2^-23 for |x| <= 3e4 (measured
    6.8e-8; ``jnp.sin`` / ``jnp.cos``: 3.2e-8); the embeddings' arguments are t f_k and lambda f_k
    with f_k <= 1.
    """
    x = jnp.asarray(x, jnp.float32)
    k = jnp.round(x * (2 / jnp.pi))
    r = x
    for part in _HALF_PI_PARTS:
        r = r - k * part
    z = r * r
    sin_r = r + r * z * (-1 / 6 + z * (1 / 120 + z * (-1 / 5040 + z * (1 / 362880 + z * (-1 / 39916800)))))
    cos_r = 1 + z * (-1 / 2 + z * (1 / 24 + z * (-1 / 720 + z * (1 / 40320 + z * (-1 / 3628800 + z / 479001600)))))
    quadrant = k.astype(jnp.int32) & 3
    swap, sin_negative, cos_negative = quadrant % 2 == 1, quadrant >= 2, (quadrant == 1) | (quadrant == 2)
    sin_x, cos_x = jnp.where(swap, cos_r, sin_r), jnp.where(swap, sin_r, cos_r)
    return jnp.where(sin_negative, -sin_x, sin_x), jnp.where(cos_negative, -cos_x, cos_x)


def sinusoidal_embedding(x: Array, dim: int, max_period: float = 1000.0) -> Array:
    """[...] -> [..., dim]: [sin(x f_k), cos(x f_k)], f_k = max_period^(-k / (dim/2 - 1)) (1 down to
    1 / max_period), by ``sin_cos``."""
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoidal_embedding: `dim` must be even and >= 4, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) / (half - 1) * jnp.arange(half))
    angles = jnp.asarray(x, jnp.float32)[..., None] * freqs
    return jnp.concatenate(sin_cos(angles), axis=-1)


class MLP(nn.Module):
    """Dense layers with ``activation`` between them; ``out`` outputs at the end."""

    hidden: Sequence[int]
    out: int
    activation: str = "relu"
    kernel_init: callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = getattr(nn, self.activation)
        for width in self.hidden:
            x = act(nn.Dense(width, kernel_init=self.kernel_init)(x))
        return nn.Dense(self.out, kernel_init=self.kernel_init)(x)


class VelocityNet(nn.Module):
    """The reference actor (module docstring).  ``obs_dim`` fixes the input layer's row split."""

    obs_dim: int
    action_dim: int
    width: int = 256
    num_blocks: int = 2
    embed_dim: int = 128
    block: str = "reference"

    def setup(self):
        if self.block not in BLOCKS:
            raise ValueError(f"VelocityNet: `block` must be one of {BLOCKS}, got {self.block!r}.")
        rows = self.obs_dim + self.action_dim + 2 * self.embed_dim
        self.kernel_in = self.param("kernel_in", ortho, (rows, self.width))
        self.bias_in = self.param("bias_in", nn.initializers.zeros_init(), (self.width,))
        self.hidden = [nn.Dense(self.width, kernel_init=ortho, name=f"block_{j}") for j in range(self.num_blocks)]
        if self.block == "prenorm":
            self.hidden_out = [nn.Dense(self.width, kernel_init=ortho, name=f"block_{j}_out")
                               for j in range(self.num_blocks)]
            self.norms = [nn.LayerNorm(name=f"norm_{j}") for j in range(self.num_blocks + 1)]
        self.head = PaddedDense(self.action_dim, kernel_init=ortho, name="head")

    def _rows(self):
        """Row blocks of W_in: (state, action, time, temperature)."""
        o, a, e = self.obs_dim, self.action_dim, self.embed_dim
        k = self.kernel_in
        return k[:o], k[o:o + a], k[o + a:o + a + e], k[o + a + e:]

    def condition(self, obs: Array, temperature: Array) -> Array:
        """W_s s + W_lam emb(lambda) + b_in: obs [..., O], temperature [...] -> [..., width]."""
        w_s, _, _, w_lam = self._rows()
        return obs @ w_s + sinusoidal_embedding(temperature, self.embed_dim) @ w_lam + self.bias_in

    def from_condition(self, cond: Array, x_t: Array, t: Array) -> Array:
        """v from ``condition``'s output: cond [..., width], x_t [..., A], t [...] -> [..., A]."""
        _, w_u, w_t, _ = self._rows()
        return self._trunk(input_matmul(x_t, w_u) + sinusoidal_embedding(t, self.embed_dim) @ w_t + cond)

    def __call__(self, obs: Array, x_t: Array, t: Array, temperature: Array) -> Array:
        """v(s, u_t, t, lambda) by the plain concatenation: obs [..., O], x_t [..., A], t and
        temperature [...] (broadcast) -> [..., A]."""
        shape = jnp.broadcast_shapes(obs.shape[:-1], x_t.shape[:-1], jnp.shape(t), jnp.shape(temperature))
        x = jnp.concatenate([jnp.broadcast_to(obs, (*shape, self.obs_dim)),
                             jnp.broadcast_to(x_t, (*shape, self.action_dim)),
                             sinusoidal_embedding(jnp.broadcast_to(t, shape), self.embed_dim),
                             sinusoidal_embedding(jnp.broadcast_to(temperature, shape), self.embed_dim)], axis=-1)
        return self._trunk(x @ self.kernel_in + self.bias_in)

    def _trunk(self, h: Array) -> Array:
        if self.block == "reference":
            h = nn.gelu(h)
            for dense in self.hidden:
                h = h + nn.gelu(dense(h))
            return self.head(h)
        for dense, dense_out, norm in zip(self.hidden, self.hidden_out, self.norms, strict=False):
            h = h + dense_out(nn.gelu(dense(norm(h))))
        return self.head(nn.gelu(self.norms[-1](h)))


class CriticEnsemble(nn.Module):
    """Q(s [..., O], a [..., A]) -> [..., K] from K critics with independent parameters: layer j
    has ``kernel_j`` [K, fan_in, width] and ``bias_j`` [K, width]; ReLU between layers.  The first
    layer is s W[:O] + a W[O:] + b (state columns shared by every action at that state)."""

    num_critics: int = 2
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: Array, action: Array) -> Array:
        obs_dim, widths = obs.shape[-1], (*self.hidden, 1)
        fans = (obs_dim + action.shape[-1], *self.hidden)
        kernels = [self.param(f"kernel_{j}", stacked(ortho, self.num_critics), (fan, width))
                   for j, (fan, width) in enumerate(zip(fans, widths, strict=True))]
        biases = [self.param(f"bias_{j}", nn.initializers.zeros_init(), (self.num_critics, width))
                  for j, width in enumerate(widths)]
        q = []
        for k in range(self.num_critics):
            w_in = kernels[0][k]
            w_s, w_a = w_in[:obs_dim], w_in[obs_dim:]
            h = kernel_matmul(obs, w_s) + biases[0][k] + kernel_matmul(action, w_a, w_a.shape[0] <= THIN_ROWS)
            for kernel, bias in zip(kernels[1:], biases[1:], strict=True):
                self.sow("intermediates", "pre_activations", h)  # critic-major; rfm_jax.min_critic reads them
                h = nn.relu(h) @ kernel[k] + bias[k]
            q.append(h[..., 0])
        return jnp.stack(q, axis=-1)


class TanhGaussianActor(nn.Module):
    """s [O] -> (mean [A], log_std [A]) of the pre-tanh Gaussian."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: Array) -> tuple[Array, Array]:
        out = MLP(tuple(self.hidden), 2 * self.action_dim)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


def tanh_gaussian_sample(key: Array, mean: Array, log_std: Array) -> tuple[Array, Array]:
    """a = tanh(mean + std eps) and log pi(a) = log N(u; mean, std) - sum_j log(1 - tanh(u_j)^2)."""
    eps = draws.normal(key, mean.shape)
    u = mean + jnp.exp(log_std) * eps
    log_normal = -0.5 * eps**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    return jnp.tanh(u), jnp.sum(log_normal - log_one_minus_tanh_sq(u), axis=-1)


def param_count(params) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
