# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Scaffolds that check the library on accelerators (not part of the package)."""
