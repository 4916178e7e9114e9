# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Flax models: encoders, decoders and the FINOLA autoencoders.

Imports flax and the core (``finola_jax``) only. Needs the ``[train]`` extra.
"""
