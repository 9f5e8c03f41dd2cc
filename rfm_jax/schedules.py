"""``rfm_jax.schedules`` is ``rfm_jax.method.schedules`` (the name users import; the same module object)."""

import sys

from rfm_jax.method import schedules as _module

sys.modules[__name__] = _module
