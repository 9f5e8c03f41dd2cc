"""rfm_jax.infra.runtime.configure_xla_cpu: the flags it adds, a user's own setting kept, the opt-out."""

import pytest

from rfm_jax.infra import runtime


@pytest.mark.parametrize("avx512", [True, False])
def test_flags_are_added_once_and_only_on_avx512_cpus_for_the_vector_width(monkeypatch, avx512):
    monkeypatch.setattr(runtime, "has_avx512", lambda: avx512)
    monkeypatch.delenv("RFM_JAX_XLA_DEFAULTS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    flags = runtime.configure_xla_cpu().split()
    assert flags[0] == "--xla_force_host_platform_device_count=2"
    assert "--xla_cpu_experimental_ynn_fusion_type=" in flags
    assert ("--xla_cpu_prefer_vector_width=512" in flags) == avx512
    assert runtime.configure_xla_cpu().split() == flags  # idempotent


def test_a_flag_the_user_set_is_kept_and_the_opt_out_adds_nothing(monkeypatch):
    monkeypatch.setattr(runtime, "has_avx512", lambda: True)
    monkeypatch.delenv("RFM_JAX_XLA_DEFAULTS", raising=False)
    mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    monkeypatch.setenv("XLA_FLAGS", mine)
    flags = runtime.configure_xla_cpu().split()
    assert mine in flags and sum(f.startswith("--xla_cpu_experimental_ynn_fusion_type") for f in flags) == 1
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("RFM_JAX_XLA_DEFAULTS", "0")
    assert runtime.configure_xla_cpu() == ""


def test_unrolled_threefry_gives_the_same_bits_without_a_loop_on_cpu():
    """The lowering configure_xla_cpu registers (conftest calls it) draws the same bits as JAX's
    rolled CPU loop, with no while loop left in the compiled program."""
    import jax
    import numpy as np
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


def test_environment_without_defaults_drops_only_our_flags():
    from rfm_jax.infra.runtime import environment_without_defaults

    env = environment_without_defaults({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type= --xla_dump_to=/x "
                                        "--xla_cpu_prefer_vector_width=512", "HOME": "h"})
    assert env == {"XLA_FLAGS": "--xla_dump_to=/x", "RFM_JAX_XLA_DEFAULTS": "0", "HOME": "h"}
