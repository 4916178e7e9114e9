# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""What a training step needs, below the tasks: ``step`` (``TrainState``,
optimizer, the ``pmap``-ed steps), ``run_config`` (config checks),
``checkpointing`` (orbax) and ``writers`` (metrics and pictures).

Imports nothing else of ``finola_jax`` and no TensorFlow. Needs the
``[train]`` extra.
"""
