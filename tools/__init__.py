# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Accelerator checks, run from the repository root (``python3 -m tools.X``)."""
