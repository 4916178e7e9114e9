"""Experiments as :class:`finola_jax.train.trainer.Task` objects."""
