"""Closed-form Gaussian posterior (docs/method.md section 6) shared by the tests.

p0 = N(0, I), p1 = N(m, S), x_t = alpha x1 + beta x0, M = alpha^2 S + beta^2 I:
    mu0 = beta M^{-1} (x_t - alpha m),  mu1 = m + alpha S M^{-1} (x_t - alpha m),
    Cov[x0 | x_t] = I - beta^2 M^{-1}.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def gaussian_log_prob(mean, cov):
    """Unnormalised log N(mean, cov) of one point [A] -> [], in full float32 on every backend."""
    precision = jnp.linalg.inv(cov)
    return lambda x: -0.5 * jnp.dot(x - mean, jnp.dot(precision, x - mean, precision="highest"), precision="highest")


def posterior(mean, cov, x_t, alpha, beta):
    """Returns (mu0 [A], mu1 [A], cov of x0 given x_t [A, A]) in float64 numpy."""
    mean, cov, x_t = (np.asarray(v, np.float64) for v in (mean, cov, x_t))
    alpha, beta = float(alpha), float(beta)
    dim = mean.shape[0]
    marginal = alpha**2 * cov + beta**2 * np.eye(dim)
    resid = np.linalg.solve(marginal, x_t - alpha * mean)
    mu0 = beta * resid
    mu1 = mean + alpha * cov @ resid
    cov0 = np.eye(dim) - beta**2 * np.linalg.inv(marginal)
    return mu0, mu1, cov0


def random_cov(rng: np.random.Generator, dim: int, diagonal: bool, scale_range=(0.5, 1.5)):
    """A well-conditioned covariance: diagonal, or rotated with the same spectrum."""
    std = rng.uniform(*scale_range, size=dim)
    cov = np.diag(std**2)
    if not diagonal:
        q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        cov = q @ cov @ q.T
    return cov.astype(np.float32)
