"""Process-level XLA settings that make the agent faster on CPU at the same float32 numbers.

``configure_xla_cpu()`` appends to ``XLA_FLAGS``:

* ``--xla_cpu_experimental_ynn_fusion_type=``: turns off XLA CPU's YNNPACK fusions, so XLA's own
  emitters compile the sampler's dense + GELU chains.  On the 2-core AVX-512 CPU of README's
  benchmark this took one reference update from about 430 to 366 ms and a lite one from 52 to 37 ms.
* ``--xla_cpu_prefer_vector_width=512``, on CPUs with AVX-512 only: XLA's elementwise kernels
  (GELU, ReLU masks, Adam) use 512-bit vectors instead of the default 256; about 2 % off a
  reference update on the same CPU (README).

Both keep float32 throughout (outputs agree to float32 rounding, see README and
``tests/test_networks.py``).  It must run before JAX starts its backend (the first computation);
a flag already named in ``XLA_FLAGS`` is left as the user set it, and ``RFM_JAX_XLA_DEFAULTS=0``
turns all of this off.
"""

from __future__ import annotations

import os

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
    """Add ``CPU_FLAGS`` (and ``AVX512_FLAGS`` where the CPU has AVX-512) to ``XLA_FLAGS`` unless
    opted out; returns the resulting ``XLA_FLAGS``."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("RFM_JAX_XLA_DEFAULTS", "1") != "0":
        for flag in CPU_FLAGS + (AVX512_FLAGS if has_avx512() else ()):
            if flag.split("=")[0] not in flags:
                flags = f"{flags} {flag}".strip()
        os.environ["XLA_FLAGS"] = flags
    return flags
