"""The method: probability paths and samplers (``schedules``), the posterior-mean estimators
(``estimators``) and the losses (``losses``), each written for one example.  This layer imports
no speed device: a normal draw reaches it through ``estimators.Source`` or an argument."""

from rfm_jax.method import estimators, losses, schedules, validation

__all__ = ["estimators", "losses", "schedules", "validation"]
