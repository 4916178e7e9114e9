# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The training loop (``trainer``) and the programs' command line
(``launch``): the top layer, over ``tasks``, ``data`` and ``train``.

Needs the ``[train]`` extra.
"""
