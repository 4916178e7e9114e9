# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The recipes: one config file per experiment (``--config=PATH``)."""
