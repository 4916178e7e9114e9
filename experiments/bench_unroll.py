# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Benchmarks finola_jax.unroll against a matmul of the same FLOPs.

For every shape (N batch, C channels, H = W map side) it measures, on the
default backend, in float32, path ``vertical_first``, centre origin:

* ``fwd``: ``jit(unroll)``;
* ``fwd+bwd``: ``jit(grad(sum(unroll(q, A, B)**2), argnums=(q, A, B)))``;
* ``matmul``: one ``[N*H*W, C] x [C, C]`` matmul (the unroll's FLOPs in one
  call) and ``step-mm``: one ``[2*N*H, C] x [C, C]`` matmul, the widest matmul
  a scan step of the unroll does (the horizontal walks of all H rows, both
  directions at once).

FLOPs per path forward: ``2*N*C^2*(H*W - 1)`` (one C x C matvec per generated
position); fwd+bwd counts 3x that. Normalization and bookkeeping are not
counted, so the rates are "matmul-equivalent" rates. Timing: compile and a
warm-up call excluded, ``block_until_ready``, median over ``--repeats``, with
the unroll, fwd+bwd and matmul calls interleaved in every repeat so that
machine noise hits them alike. ``ratio = fwd rate / matmul rate``.

It also times ``jit(unroll).lower(...).compile()`` for a 16x16 and a 256x256
map (N=1, C=64): a scan compiles once whatever the map size, so the ratio
should stay near 1 (target: within 1.5x).

Usage (the key figure, N=32, C=512, H=W=16)::

  python3 -m experiments.bench_unroll --n=32 --c=512 --hw=16
  python3 -m experiments.bench_unroll            # full grid, see --max_seconds
  python3 -m experiments.bench_unroll --breakdown  # + normalization share,
                                                   # column walk, page faults

No XLA flags are set here: the CPU backend uses its default intra-op
(Eigen) thread pool. To pin threads, set ``XLA_FLAGS`` yourself (e.g.
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) and
record it with the results.
"""

from __future__ import annotations

import functools
import os
import resource
import statistics
import time
from typing import Callable, Dict, List, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import finola_jax as fj

_N = flags.DEFINE_list("n", ["8", "32"], "Batch sizes N.")
_C = flags.DEFINE_list("c", ["256", "512", "1024"], "Channel counts C.")
_HW = flags.DEFINE_list("hw", ["16", "64"], "Map sides H = W.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repeats (median).")
_MAX_SECONDS = flags.DEFINE_float(
    "max_seconds", 60.0,
    "Skip a shape whose estimated timing (repeats x (fwd + fwd+bwd + "
    "matmuls), estimated from one timed matmul of the same FLOPs) exceeds "
    "this many seconds; 0 disables the check.")
_BACKWARD = flags.DEFINE_bool("backward", True, "Also time fwd+bwd.")
_COMPILE = flags.DEFINE_bool(
    "compile", True, "Time compilation of 16x16 vs 256x256 unrolls.")
_COMPILE_REPEATS = flags.DEFINE_integer("compile_repeats", 3,
                                        "Compilations timed per size.")
_PATH = flags.DEFINE_enum("path", "vertical_first", fj.PATHS, "Unroll path.")
_BREAKDOWN = flags.DEFINE_bool(
    "breakdown", False,
    "Also time, interleaved with the rest, unroll(normalized=False) (the cost "
    "of normalization), the vertical phase alone (an H x 1 unroll) and count "
    "minor page faults per call of fwd and matmul (fresh output buffers).")
_OUTPUT = flags.DEFINE_string("output", None,
                              "Also write the markdown report to this file.")


def _block(x):
  return jax.tree_util.tree_map(lambda a: a.block_until_ready(), x)


def _time_once(fn: Callable, *args) -> float:
  start = time.perf_counter()
  _block(fn(*args))
  return time.perf_counter() - start


def _faults_per_call(fn: Callable, *args, calls: int = 5) -> float:
  """Minor page faults per call (first touches of freshly mapped memory)."""
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(calls):
    _block(fn(*args))
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def _inputs(n: int, c: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(n, c)), jnp.float32)
  A = jnp.asarray(0.1 * rng.normal(size=(c, c)) / np.sqrt(c), jnp.float32)
  B = jnp.asarray(0.1 * rng.normal(size=(c, c)) / np.sqrt(c), jnp.float32)
  return q, A, B


def unroll_flops(n: int, c: int, h: int, w: int) -> float:
  """Matmul FLOPs of one path's forward unroll: a C x C matvec per cell."""
  return 2.0 * n * c * c * (h * w - 1)


def bench_shape(n: int, c: int, hw: int, repeats: int, max_seconds: float,
                backward: bool, path: str,
                breakdown: bool = False) -> Dict[str, float]:
  """Times one shape; returns seconds and rates (GFLOP/s)."""
  q, A, B = _inputs(n, c)
  unroll = functools.partial(fj.unroll, height=hw, width=hw, path=path)
  fwd = jax.jit(unroll)

  def loss(q, A, B):
    return jnp.sum(jnp.square(unroll(q, A, B)))

  fwd_bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  matmul = jax.jit(jnp.matmul)
  rng = np.random.default_rng(1)
  big = jnp.asarray(rng.normal(size=(n * hw * hw, c)), jnp.float32)
  step_rows = 2 * n * hw
  small = jnp.asarray(rng.normal(size=(step_rows, c)), jnp.float32)

  flops = unroll_flops(n, c, hw, hw)
  result = {"n": n, "c": c, "hw": hw, "flops": flops}

  # Compile + warm up the matmul; estimate the cost of the whole timing.
  _block(matmul(big, A))
  t_mm = _time_once(matmul, big, A)
  estimate = repeats * t_mm * (2 + (3 if backward else 0))
  result["estimate_s"] = estimate
  if max_seconds and estimate > max_seconds:
    result["skipped"] = True
    return result

  start = time.perf_counter()
  _block(fwd(q, A, B))
  result["compile_fwd_s"] = time.perf_counter() - start
  if backward:
    start = time.perf_counter()
    _block(fwd_bwd(q, A, B))
    result["compile_bwd_s"] = time.perf_counter() - start
  _block(matmul(small, A))
  if breakdown:
    linear = jax.jit(functools.partial(unroll, normalized=False))
    column = jax.jit(functools.partial(fj.unroll, height=hw, width=1,
                                       path=path))
    _block(linear(q, A, B))
    _block(column(q, A, B))
  # Second warm-up call of everything (allocator, thread pool).
  _block(fwd(q, A, B))
  if backward:
    _block(fwd_bwd(q, A, B))

  times: Dict[str, List[float]] = {"fwd": [], "bwd": [], "mm": [], "step": [],
                                   "linear": [], "column": []}
  small_calls = max(1, (hw - 1))  # enough calls to be measurable
  for _ in range(repeats):  # interleaved
    times["fwd"].append(_time_once(fwd, q, A, B))
    times["mm"].append(_time_once(matmul, big, A))
    if backward:
      times["bwd"].append(_time_once(fwd_bwd, q, A, B))
    start = time.perf_counter()
    for _ in range(small_calls):
      out = matmul(small, A)
    out.block_until_ready()
    times["step"].append((time.perf_counter() - start) / small_calls)
    if breakdown:
      times["linear"].append(_time_once(linear, q, A, B))
      times["column"].append(_time_once(column, q, A, B))

  med = {k: statistics.median(v) for k, v in times.items() if v}
  result.update({
      "fwd_s": med["fwd"],
      "mm_s": med["mm"],
      "step_mm_s": med["step"],
      "fwd_gflops": flops / med["fwd"] / 1e9,
      "mm_gflops": flops / med["mm"] / 1e9,
      "step_mm_gflops": 2.0 * step_rows * c * c / med["step"] / 1e9,
  })
  result["ratio"] = result["fwd_gflops"] / result["mm_gflops"]
  if breakdown:
    result["linear_s"] = med["linear"]
    result["column_s"] = med["column"]
    result["fwd_faults"] = _faults_per_call(fwd, q, A, B)
    result["mm_faults"] = _faults_per_call(matmul, big, A)
    result["map_pages"] = n * hw * hw * c * 4 / resource.getpagesize()
  if backward:
    result["bwd_s"] = med["bwd"]
    result["bwd_gflops"] = 3 * flops / med["bwd"] / 1e9
    result["bwd_ratio"] = result["bwd_gflops"] / result["mm_gflops"]
  return result


def compile_times(sizes: Sequence[int], repeats: int, n: int = 1,
                  c: int = 64) -> Dict[int, float]:
  """Median seconds of trace + lower + compile of jit(unroll) per map side."""
  q, A, B = _inputs(n, c)
  out = {}
  for hw in sizes:
    samples = []
    for _ in range(repeats):
      # A fresh function each time, so nothing is served from a cache.
      fn = jax.jit(lambda q, A, B, hw=hw: fj.unroll(q, A, B, hw, hw))
      start = time.perf_counter()
      fn.lower(q, A, B).compile()
      samples.append(time.perf_counter() - start)
    out[hw] = statistics.median(samples)
  return out


def _fmt(x, spec=".1f"):
  return format(x, spec) if isinstance(x, (int, float)) else str(x)


def markdown(results: Sequence[Dict[str, float]], backward: bool) -> str:
  head = ["N", "C", "H=W", "GFLOP", "fwd ms", "fwd GFLOP/s", "matmul ms",
          "matmul GFLOP/s", "**fwd/matmul**", "step-mm GFLOP/s"]
  if backward:
    head += ["fwd+bwd ms", "fwd+bwd GFLOP/s", "fwd+bwd/matmul"]
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for r in results:
    row = [str(r["n"]), str(r["c"]), str(r["hw"]), _fmt(r["flops"] / 1e9)]
    if r.get("skipped"):
      row += [f"skipped (est. {r['estimate_s']:.0f} s > --max_seconds)"]
      row += [""] * (len(head) - len(row))
    else:
      row += [_fmt(1e3 * r["fwd_s"], ".2f"), _fmt(r["fwd_gflops"]),
              _fmt(1e3 * r["mm_s"], ".2f"), _fmt(r["mm_gflops"]),
              "**" + _fmt(r["ratio"], ".2f") + "**",
              _fmt(r["step_mm_gflops"])]
      if backward:
        row += [_fmt(1e3 * r["bwd_s"], ".2f"), _fmt(r["bwd_gflops"]),
                _fmt(r["bwd_ratio"], ".2f")]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def breakdown_markdown(results: Sequence[Dict[str, float]]) -> str:
  head = ["N", "C", "H=W", "fwd ms", "normalized=False ms",
          "normalization share", "vertical phase (Hx1) ms", "matmul ms",
          "page faults/call fwd", "page faults/call matmul", "map pages"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in results:
    if r.get("skipped") or "linear_s" not in r:
      continue
    lines.append("| " + " | ".join([
        str(r["n"]), str(r["c"]), str(r["hw"]), _fmt(1e3 * r["fwd_s"], ".2f"),
        _fmt(1e3 * r["linear_s"], ".2f"),
        _fmt(100 * (1 - r["linear_s"] / r["fwd_s"]), ".0f") + "%",
        _fmt(1e3 * r["column_s"], ".2f"), _fmt(1e3 * r["mm_s"], ".2f"),
        _fmt(r["fwd_faults"], ".0f"), _fmt(r["mm_faults"], ".0f"),
        _fmt(r["map_pages"], ".0f")]) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  device = jax.devices()[0]
  header = [
      f"backend: {jax.default_backend()} ({device.device_kind}), "
      f"{jax.device_count()} device(s), os.cpu_count()={os.cpu_count()}, "
      f"jax {jax.__version__}",
      f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
      f"path={_PATH.value}, float32, centre origin, repeats={_REPEATS.value}"
      f" (median), max_seconds={_MAX_SECONDS.value}",
  ]
  if hasattr(os, "getloadavg"):
    header.append("load average at start: %.2f %.2f %.2f" % os.getloadavg())
  print("\n".join(header), flush=True)

  results = []
  for n in map(int, _N.value):
    for c in map(int, _C.value):
      for hw in map(int, _HW.value):
        r = bench_shape(n, c, hw, _REPEATS.value, _MAX_SECONDS.value,
                        _BACKWARD.value, _PATH.value, _BREAKDOWN.value)
        results.append(r)
        if r.get("skipped"):
          print(f"N={n} C={c} H=W={hw}: skipped (estimated "
                f"{r['estimate_s']:.0f} s)", flush=True)
        else:
          print(f"N={n} C={c} H=W={hw}: fwd {r['fwd_gflops']:.1f} GFLOP/s, "
                f"matmul {r['mm_gflops']:.1f} GFLOP/s, ratio "
                f"{r['ratio']:.2f}" +
                (f", fwd+bwd {r['bwd_gflops']:.1f} GFLOP/s"
                 if _BACKWARD.value else ""), flush=True)

  report = ["\n".join("    " + h for h in header), "", markdown(
      results, _BACKWARD.value)]
  if _BREAKDOWN.value:
    report += ["", breakdown_markdown(results)]
  if _COMPILE.value:
    ct = compile_times((16, 256), _COMPILE_REPEATS.value)
    report += [
        "",
        "| compile jit(unroll), N=1, C=64 | seconds (median of "
        f"{_COMPILE_REPEATS.value}) |",
        "|---|---|",
        f"| 16x16 | {ct[16]:.3f} |",
        f"| 256x256 | {ct[256]:.3f} |",
        f"| **ratio 256/16** | **{ct[256] / ct[16]:.2f}** (target <= 1.5) |",
    ]
  if hasattr(os, "getloadavg"):
    report.append("\nload average at end: %.2f %.2f %.2f" % os.getloadavg())
  text = "\n".join(report)
  print()
  print(text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
