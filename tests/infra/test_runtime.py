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


def test_environment_without_defaults_drops_only_our_flags():
    from rfm_jax.infra.runtime import environment_without_defaults

    env = environment_without_defaults({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type= --xla_dump_to=/x "
                                        "--xla_cpu_prefer_vector_width=512", "HOME": "h"})
    assert env == {"XLA_FLAGS": "--xla_dump_to=/x", "RFM_JAX_XLA_DEFAULTS": "0", "HOME": "h"}
