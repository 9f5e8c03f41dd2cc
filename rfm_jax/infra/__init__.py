"""Infrastructure: checkpoints (orbax), metrics files, the multi-device layout, guards (signals,
non-finite values, a full disk), the XLA CPU set-up (``runtime``) and the update's cost model
(``macs``).  Import the modules by name."""
