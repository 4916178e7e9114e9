# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Benchmarks finola_jax.unroll against a matmul of the same FLOPs.

For every shape (N batch, C channels, H = W map side) it measures, on the
default backend, in ``--dtype`` (float32 or bfloat16), ``--path`` (default
``vertical_first``), centre origin, ``--implementation`` (the one actually
used is reported per row):

* ``fwd``: ``jit(unroll)``;
* ``fwd+bwd``: ``jit(grad(sum(unroll(q, A, B)**2), argnums=(q, A, B)))``;
* ``matmul``: one ``[N*H*W, C] x [C, C]`` matmul (the unroll's FLOPs in one
  call) and ``step-mm``: one ``[2*N*H, C] x [C, C]`` matmul, the widest matmul
  a scan step of the unroll does (the horizontal walks of all H rows, both
  directions at once).

FLOPs per path forward: ``2*N*C^2*(H*W - 1)`` (one C x C matvec per generated
position); fwd+bwd counts 3x that (compared with three same-FLOP matmuls).
Normalization and bookkeeping are not counted, so the rates are
"matmul-equivalent" rates. ``µs/step`` is the forward's wall time divided
by its sequential steps (``max(r0, H-1-r0) + max(c0, W-1-c0)`` per path).
Timing: compile and a warm-up call excluded, ``block_until_ready``, median
over ``--repeats``, with the unroll, fwd+bwd and matmul calls interleaved in
every repeat so that machine noise hits them alike.
``ratio = fwd rate / matmul rate``.

A PyTorch peer (``--peer_script=PATH``: a script that prints its GFLOP/s
for the arguments ``N C H W``, e.g. an eager float32 ``vertical_first``
loop) runs after each shape when given and torch is importable; its GFLOP/s
is reported next to the unroll's.

``--memory`` instead reports XLA's compile-only memory analysis of fwd+bwd
(``temp_size_in_bytes``; nothing is run) for unroll and extrapolate (from a
top-left quadrant block), every path, at bfloat16 N=32 C=1024 and float32
N=8 C=512, 256x256 maps, as bytes and as a multiple of the map's bytes.

It also times ``jit(unroll).lower(...).compile()`` for a 16x16 and a 256x256
map (N=1, C=64): a scan compiles once whatever the map size, so the ratio
should stay near 1 (target: within 1.5x).

``--paths=1,4`` instead times ``finola_jax.unroll_paths`` (M paths in one
call, each with its own A, B) for each M against M=1 and reports the time
per path (``per path / M=1`` below 1: M paths cost less than M single
unrolls).

Usage (the key figure, N=32, C=512, H=W=16)::

  python3 -m experiments.bench_unroll --n=32 --c=512 --hw=16
  python3 -m experiments.bench_unroll            # full grid, see --max_seconds
  python3 -m experiments.bench_unroll --breakdown  # + normalization share,
                                                   # column walk, page faults
  python3 -m experiments.bench_unroll --memory     # compile-only memory

No XLA flags are set here: the CPU backend uses its default intra-op
(Eigen) thread pool. To pin threads, set ``XLA_FLAGS`` yourself (e.g.
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) and
record it with the results.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
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
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "dtype of q, A, B (and of the matmul baseline).")
_IMPLEMENTATION = flags.DEFINE_enum(
    "implementation", "auto", fj.core.IMPLEMENTATIONS,
    "unroll's implementation keyword (the one used is reported per row).")
_PEER_SCRIPT = flags.DEFINE_string(
    "peer_script", None,
    "A PyTorch peer run after each shape (float32, vertical_first) when "
    "torch is importable: a script printing its GFLOP/s for the arguments "
    "N C H W. None: no peer.")
_MEMORY = flags.DEFINE_bool(
    "memory", False, "Only the compile-only memory analysis of fwd+bwd at "
    "the two target shapes (nothing is run).")
_BREAKDOWN = flags.DEFINE_bool(
    "breakdown", False,
    "Also time, interleaved with the rest, unroll(normalized=False) (the cost "
    "of normalization), the vertical phase alone (an H x 1 unroll) and count "
    "minor page faults per call of fwd and matmul (fresh output buffers).")
_PATHS = flags.DEFINE_list(
    "paths", None, "Only time multi-path unrolls (finola_jax.unroll_paths) "
    "with these numbers of paths M, against M=1 in the same repeats, at each "
    "shape of --n, --c, --hw (e.g. --paths=1,4,8).")
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


def _inputs(n: int, c: int, seed: int = 0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(n, c)), dtype)
  A = jnp.asarray(0.1 * rng.normal(size=(c, c)) / np.sqrt(c), dtype)
  B = jnp.asarray(0.1 * rng.normal(size=(c, c)) / np.sqrt(c), dtype)
  return q, A, B


def unroll_flops(n: int, c: int, h: int, w: int) -> float:
  """Matmul FLOPs of one path's forward unroll: a C x C matvec per cell."""
  return 2.0 * n * c * c * (h * w - 1)


def sequential_steps(h: int, w: int, path: str) -> int:
  """Loop steps one after another of a centre-origin unroll (both paths of
  ``average``)."""
  r0, c0 = h // 2, w // 2
  one_path = max(r0, h - 1 - r0) + max(c0, w - 1 - c0)
  return 2 * one_path if path == "average" else one_path


def run_peer(script: str, n: int, c: int, hw: int, dtype: str, path: str):
  """(GFLOP/s of the PyTorch peer, None) or (None, why it was skipped)."""
  if importlib.util.find_spec("torch") is None:
    return None, "torch is not importable"
  if dtype != "float32" or path != "vertical_first":
    return None, "the peer runs float32 vertical_first only"
  out = subprocess.run([sys.executable, script] + [str(v) for v in
                                                   (n, c, hw, hw)],
                       capture_output=True, text=True, timeout=1800,
                       check=True)
  return float(out.stdout.strip().splitlines()[-1]), None


def bench_shape(n: int, c: int, hw: int, repeats: int, max_seconds: float,
                backward: bool, path: str, breakdown: bool = False,
                dtype: str = "float32",
                implementation: str = "auto") -> Dict[str, float]:
  """Times one shape; returns seconds and rates (GFLOP/s)."""
  q, A, B = _inputs(n, c, dtype=jnp.dtype(dtype))
  unroll = functools.partial(fj.unroll, height=hw, width=hw, path=path,
                             implementation=implementation)
  fwd = jax.jit(unroll)

  def loss(q, A, B):
    return jnp.sum(jnp.square(unroll(q, A, B)))

  fwd_bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  matmul = jax.jit(jnp.matmul)
  rng = np.random.default_rng(1)
  big = jnp.asarray(rng.normal(size=(n * hw * hw, c)), jnp.dtype(dtype))
  step_rows = 2 * n * hw
  small = jnp.asarray(rng.normal(size=(step_rows, c)), jnp.dtype(dtype))

  flops = unroll_flops(n, c, hw, hw)
  used, interpret = fj.core.select_implementation(
      implementation, jnp.dtype(dtype), c, hw * hw * c)
  result = {"n": n, "c": c, "hw": hw, "flops": flops, "dtype": dtype,
            "implementation": used + (" (interpreted)" if interpret else ""),
            "steps": sequential_steps(hw, hw, path)}

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
                                       path=path,
                                       implementation=implementation))
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
      "us_per_step": 1e6 * med["fwd"] / result["steps"],
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
    # Against three same-FLOP matmuls: 3 * matmul time / fwd+bwd time.
    result["bwd_ratio"] = result["bwd_gflops"] / result["mm_gflops"]
  return result


def bench_paths(n: int, c: int, hw: int, paths: Sequence[int], repeats: int,
                path: str, dtype: str, implementation: str,
                backward: bool) -> List[Dict[str, float]]:
  """Times ``unroll_paths`` for each M of ``paths`` (and M=1), interleaved.

  Returns one row per M: the medians ``fwd_s`` (and ``bwd_s``), their time
  per path, and ``per_path_vs_one``: time per path over the time of M=1;
  ``loop_*``: the forward as M separate single-path unrolls in one jitted
  program instead of one batched call (the alternative to ``vmap``).
  """
  paths = sorted(set(paths) | {1})
  rng = np.random.default_rng(0)
  fns, args = {}, {}
  for m in paths:
    q = jnp.asarray(rng.normal(size=(n, m, c)), jnp.dtype(dtype))
    A, B = (jnp.asarray(0.1 * rng.normal(size=(m, c, c)) / np.sqrt(c),
                        jnp.dtype(dtype)) for _ in range(2))
    unroll = functools.partial(fj.unroll_paths, height=hw, width=hw, path=path,
                               implementation=implementation)
    fns[m, "fwd"] = jax.jit(unroll)
    # The alternative to vmap: M single-path unrolls in one program.
    single = functools.partial(fj.unroll, height=hw, width=hw, path=path,
                               implementation=implementation)
    fns[m, "loop"] = jax.jit(lambda q, A, B, f=single: jnp.stack(
        [f(q[:, i], A[i], B[i]) for i in range(A.shape[0])], axis=1))
    if backward:
      fns[m, "bwd"] = jax.jit(jax.grad(
          lambda q, A, B, f=unroll: jnp.sum(jnp.square(f(q, A, B))),
          argnums=(0, 1, 2)))
    args[m] = (q, A, B)
  for (m, _), fn in fns.items():  # Compile and warm up twice.
    _block(fn(*args[m]))
    _block(fn(*args[m]))
  times = {key: [] for key in fns}
  for _ in range(repeats):
    for (m, kind), fn in fns.items():
      times[m, kind].append(_time_once(fn, *args[m]))
  used, interpret = fj.core.select_implementation(
      implementation, jnp.dtype(dtype), c, hw * hw * c)
  rows = []
  for m in paths:
    row = {"n": n, "c": c, "hw": hw, "paths": m, "dtype": dtype,
           "implementation": used + (" (interpreted)" if interpret else "")}
    for kind in ("fwd", "loop", "bwd") if backward else ("fwd", "loop"):
      seconds = statistics.median(times[m, kind])
      one = statistics.median(times[1, kind])
      row[f"{kind}_s"] = seconds
      row[f"{kind}_per_path_s"] = seconds / m
      row[f"{kind}_per_path_vs_one"] = seconds / m / one
    rows.append(row)
  return rows


def paths_markdown(rows: Sequence[Dict[str, float]], backward: bool) -> str:
  """The multi-path table: time per path against one path."""
  kinds = ("fwd", "loop", "bwd") if backward else ("fwd", "loop")
  names = {"fwd": "fwd", "loop": "fwd, M unrolls unbatched", "bwd": "fwd+bwd"}
  lines = ["| N | C | H=W | impl | M | " + " | ".join(
      f"{names[k]} ms | {names[k]} ms/path | {names[k]} per path / M=1"
      for k in kinds) + " |",
           "|---" * (5 + 3 * len(kinds)) + "|"]
  for r in rows:
    lines.append(f"| {r['n']} | {r['c']} | {r['hw']} | {r['implementation']} "
                 f"| {r['paths']} | " + " | ".join(
                     f"{1e3 * r[k + '_s']:.2f} | {1e3 * r[k + '_per_path_s']:.2f}"
                     f" | {r[k + '_per_path_vs_one']:.2f}" for k in kinds) + " |")
  return "\n".join(lines)


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


# The two shapes of the memory targets: (dtype, N, C), 256x256 maps.
MEMORY_SHAPES = (("bfloat16", 32, 1024), ("float32", 8, 512))
MEMORY_SIDE = 256


def grad_memory(kind: str, path: str, n: int, c: int, hw: int, dtype: str,
                implementation: str = "auto") -> Dict[str, float]:
  """Compile-only XLA memory analysis of fwd+bwd (nothing is run).

  ``jit(grad(sum(f(x, A, B)**2), argnums=(x, A, B)))`` for ``f`` an unroll
  from the centre (``x = q [N, C]``) or an extrapolation from the top-left
  quadrant (``x = block [N, hw/2, hw/2, C]``).
  """
  dt = jnp.dtype(dtype)
  matrix = jax.ShapeDtypeStruct((c, c), dt)
  if kind == "unroll":
    x = jax.ShapeDtypeStruct((n, c), dt)
    fn = functools.partial(fj.unroll, height=hw, width=hw, path=path,
                           implementation=implementation)
  else:
    x = jax.ShapeDtypeStruct((n, hw // 2, hw // 2, c), dt)
    fn = functools.partial(fj.extrapolate, height=hw, width=hw, path=path,
                           implementation=implementation)

  def loss(x, A, B):
    return jnp.sum(fn(x, A, B) ** 2)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(
      x, matrix, matrix).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  map_bytes = n * hw * hw * c * dt.itemsize
  return {"kind": kind, "path": path, "n": n, "c": c, "hw": hw,
          "dtype": dtype, "temp": temp, "map": map_bytes,
          "ratio": temp / map_bytes}


def memory_markdown(rows: Sequence[Dict[str, float]]) -> str:
  head = ["dtype", "N", "C", "H=W", "function", "path", "map GiB",
          "temp GiB", "**temp / map**"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    function = ("unroll (centre)" if r["kind"] == "unroll" else
                f"extrapolate ({r['hw'] // 2}x{r['hw'] // 2} block)")
    lines.append("| " + " | ".join([
        r["dtype"], str(r["n"]), str(r["c"]), str(r["hw"]), function,
        r["path"], _fmt(r["map"] / 2**30, ".2f"),
        _fmt(r["temp"] / 2**30, ".2f"),
        "**" + _fmt(r["ratio"], ".2f") + "**"]) + " |")
  return "\n".join(lines)


def _fmt(x, spec=".1f"):
  return format(x, spec) if isinstance(x, (int, float)) else str(x)


def markdown(results: Sequence[Dict[str, float]], backward: bool) -> str:
  head = ["N", "C", "H=W", "dtype", "implementation", "GFLOP", "fwd ms",
          "µs/step", "fwd GFLOP/s", "matmul ms", "matmul GFLOP/s",
          "**fwd/matmul**", "step-mm GFLOP/s"]
  if backward:
    head += ["fwd+bwd ms", "fwd+bwd GFLOP/s", "fwd+bwd / 3 matmuls"]
  head += ["torch peer GFLOP/s", "torch / fwd"]
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for r in results:
    row = [str(r["n"]), str(r["c"]), str(r["hw"]), r["dtype"],
           r["implementation"], _fmt(r["flops"] / 1e9)]
    if r.get("skipped"):
      row += [f"skipped (est. {r['estimate_s']:.0f} s > --max_seconds)"]
      row += [""] * (len(head) - len(row))
    else:
      row += [_fmt(1e3 * r["fwd_s"], ".2f"), _fmt(r["us_per_step"], ".0f"),
              _fmt(r["fwd_gflops"]), _fmt(1e3 * r["mm_s"], ".2f"),
              _fmt(r["mm_gflops"]), "**" + _fmt(r["ratio"], ".2f") + "**",
              _fmt(r["step_mm_gflops"])]
      if backward:
        row += [_fmt(1e3 * r["bwd_s"], ".2f"), _fmt(r["bwd_gflops"]),
                _fmt(r["bwd_ratio"], ".2f")]
      if r.get("peer_gflops") is None:
        row += ["skipped", ""]
      else:
        row += [_fmt(r["peer_gflops"]),
                _fmt(r["peer_gflops"] / r["fwd_gflops"], ".2f")]
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


def _report(text: str) -> None:
  """Prints the report and writes it to ``--output`` when given."""
  print()
  print(text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")


def main(argv):
  del argv
  if _PEER_SCRIPT.value and not os.path.isfile(_PEER_SCRIPT.value):
    raise app.UsageError(f"--peer_script={_PEER_SCRIPT.value} is not a file.")
  device = jax.devices()[0]
  header = [
      f"backend: {jax.default_backend()} ({device.device_kind}), "
      f"{jax.device_count()} device(s), os.cpu_count()={os.cpu_count()}, "
      f"jax {jax.__version__}",
      f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
      (f"compile-only memory analysis of jit(grad(sum(f**2))), "
       f"implementation={_IMPLEMENTATION.value}" if _MEMORY.value else
       f"path={_PATH.value}, {_DTYPE.value}, centre origin, "
       f"implementation={_IMPLEMENTATION.value}, repeats={_REPEATS.value}"
       f" (median), max_seconds={_MAX_SECONDS.value}"),
  ]
  if hasattr(os, "getloadavg"):
    header.append("load average at start: %.2f %.2f %.2f" % os.getloadavg())
  print("\n".join(header), flush=True)

  if _MEMORY.value:
    rows = []
    for dtype, n, c in MEMORY_SHAPES:
      for kind in ("unroll", "extrapolate"):
        for path in fj.PATHS:
          rows.append(grad_memory(kind, path, n, c, MEMORY_SIDE, dtype,
                                  _IMPLEMENTATION.value))
          print(f"{dtype} N={n} C={c} {kind} {path}: temp / map = "
                f"{rows[-1]['ratio']:.2f}", flush=True)
    text = "\n".join(["\n".join("    " + h for h in header), "",
                      memory_markdown(rows)])
    _report(text)
    return

  if _PATHS.value:
    rows = []
    for n in map(int, _N.value):
      for c in map(int, _C.value):
        for hw in map(int, _HW.value):
          rows += bench_paths(n, c, hw, [int(m) for m in _PATHS.value],
                              _REPEATS.value, _PATH.value, _DTYPE.value,
                              _IMPLEMENTATION.value, _BACKWARD.value)
          print(f"N={n} C={c} H=W={hw}: done", flush=True)
    text = "\n".join(["\n".join("    " + h for h in header), "",
                      paths_markdown(rows, _BACKWARD.value)])
    _report(text)
    return

  results = []
  for n in map(int, _N.value):
    for c in map(int, _C.value):
      for hw in map(int, _HW.value):
        r = bench_shape(n, c, hw, _REPEATS.value, _MAX_SECONDS.value,
                        _BACKWARD.value, _PATH.value, _BREAKDOWN.value,
                        _DTYPE.value, _IMPLEMENTATION.value)
        results.append(r)
        if r.get("skipped"):
          print(f"N={n} C={c} H=W={hw}: skipped (estimated "
                f"{r['estimate_s']:.0f} s)", flush=True)
          continue
        print(f"N={n} C={c} H=W={hw} ({r['implementation']}): fwd "
              f"{r['fwd_gflops']:.1f} GFLOP/s, {r['us_per_step']:.0f} "
              f"µs/step, matmul {r['mm_gflops']:.1f} GFLOP/s, ratio "
              f"{r['ratio']:.2f}" +
              (f", fwd+bwd {r['bwd_gflops']:.1f} GFLOP/s"
               if _BACKWARD.value else ""), flush=True)
        if _PEER_SCRIPT.value:
          r["peer_gflops"], why = run_peer(_PEER_SCRIPT.value, n, c, hw,
                                           _DTYPE.value, _PATH.value)
          print(f"  torch peer: {r['peer_gflops']:.1f} GFLOP/s" if why is None
                else f"  torch peer skipped: {why}", flush=True)

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
  _report(text)


if __name__ == "__main__":
  app.run(main)
