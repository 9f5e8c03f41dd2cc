"""``rfm_jax.losses`` is ``rfm_jax.method.losses`` (the name users import; the same module object)."""

import sys

from rfm_jax.method import losses as _module

sys.modules[__name__] = _module
