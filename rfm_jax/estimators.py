"""``rfm_jax.estimators`` is ``rfm_jax.method.estimators`` (the name users import; the same module object)."""

import sys

from rfm_jax.method import estimators as _module

sys.modules[__name__] = _module
