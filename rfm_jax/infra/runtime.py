"""Process-level XLA settings that make the agent faster on CPU at the same float32 numbers.

``configure_xla_cpu()`` appends to ``XLA_FLAGS``:

* ``--xla_cpu_experimental_ynn_fusion_type=``: turns off XLA CPU's YNNPACK fusions, so XLA's own
  emitters compile the sampler's dense + GELU chains.
* ``--xla_cpu_prefer_vector_width=512``, on CPUs with AVX-512 only: XLA's elementwise kernels
  (GELU, ReLU masks, Adam) use 512-bit vectors instead of the default 256.

Both keep float32 throughout (outputs agree to float32 rounding, see
``tests/networks/test_networks.py``).  ``configure_xla_cpu()`` also calls ``unroll_threefry_on_cpu()``
(the same random bits, less time on CPU).  It must run before JAX starts its backend (the first
computation); a flag already named in ``XLA_FLAGS`` is left as the user set it, and
``RFM_JAX_XLA_DEFAULTS=0`` (or ``RFM_JAX_PLAIN=1``, which also turns off every speed device of
``rfm_jax._speed``) turns all of this off.  ``docs/performance.md`` has the measured effect.
"""

from __future__ import annotations

import os

from rfm_jax._speed.threefry import unroll_threefry_on_cpu

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
AVX512_FLAGS = ("--xla_cpu_prefer_vector_width=512",)


def has_avx512() -> bool:
    """Whether /proc/cpuinfo lists avx512f (False where it cannot be read, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def configure_xla_cpu() -> str:
    """Add ``CPU_FLAGS`` (and ``AVX512_FLAGS`` where the CPU has AVX-512) to ``XLA_FLAGS`` and
    ``unroll_threefry_on_cpu()`` unless opted out; returns the resulting ``XLA_FLAGS``."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("RFM_JAX_XLA_DEFAULTS", "1") != "0" and os.environ.get("RFM_JAX_PLAIN", "0") != "1":
        for flag in CPU_FLAGS + (AVX512_FLAGS if has_avx512() else ()):
            if flag.split("=")[0] not in flags:
                flags = f"{flags} {flag}".strip()
        os.environ["XLA_FLAGS"] = flags
        unroll_threefry_on_cpu()  # imports jax, which reads XLA_FLAGS only when its backend starts
    return flags


def environment_without_defaults(environ=None) -> dict:
    """A copy of ``environ`` (default ``os.environ``) for a child process that runs without these
    settings: ``RFM_JAX_XLA_DEFAULTS=0`` and the flags ``configure_xla_cpu`` adds removed from
    ``XLA_FLAGS`` (any other flag kept).  The tests run their learning checks both ways with it."""
    environ = dict(os.environ if environ is None else environ)
    ours = {flag.split("=")[0] for flag in CPU_FLAGS + AVX512_FLAGS}
    flags = [f for f in environ.get("XLA_FLAGS", "").split() if f.split("=")[0] not in ours]
    return {**environ, "RFM_JAX_XLA_DEFAULTS": "0", "XLA_FLAGS": " ".join(flags)}


def environment_plain(environ=None) -> dict:
    """``environment_without_defaults`` with ``RFM_JAX_PLAIN=1``: a child process on plain JAX
    operations only (no XLA flag defaults, no speed device of ``rfm_jax._speed``)."""
    return {**environment_without_defaults(environ), "RFM_JAX_PLAIN": "1"}
