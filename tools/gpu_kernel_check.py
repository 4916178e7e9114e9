# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""GPU check of finola_jax.walk_kernel: numerics, then timings (< 150 s).

Needs jax and numpy only (``finola_jax`` imports nothing else; no
TensorFlow, flax or optax).

1. Numerics: ``grow_forward`` and ``grow_backward`` against the tests'
   reference walk (``tests/reference.py``, run in float32 ``jnp`` with full
   precision matmuls; ``jax.vjp`` for the gradients) on small shapes of both
   phases' layouts, bfloat16 and float32, every candidate config of the
   first case. Prints max relative errors (``max |kernel − ref| / max
   |ref|``).
2. Timings: a full centre-origin ``vertical_first`` unroll built from two
   ``grow_forward`` calls (vertical phase, then horizontal phase), and its
   fwd+bwd (``grad`` of ``sum(map²)`` w.r.t. q, A, B through a
   ``custom_vjp`` per phase), against the same-FLOP matmul
   ``[N·H·W, C] × [C, C]`` (fwd+bwd: against three). Defaults first for every
   shape, then the candidate configs (``walk_kernel.candidate_configs``) of
   each phase while the time budget lasts. Every timed map is compared with
   the float32 reference of the same shape (``err`` column).
3. Every configuration runs in its own try/except: a failure prints its first
   lines and the script goes on.

Usage (from the repository root)::

  python3 -m tools.gpu_kernel_check                 # on the GPU
  python3 -m tools.gpu_kernel_check --quick         # CPU smoke (interpret)
  python3 -m tools.gpu_kernel_check --budget_s=100 --output=report.md
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
import traceback
import warnings

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from finola_jax import walk_kernel as wk
from tests import reference

EPS = 1e-6
START = time.monotonic()
# Benchmark shapes (N, C, H = W, dtype): the project's targets.
SHAPES = ((32, 1024, 64, jnp.bfloat16), (8, 512, 256, jnp.bfloat16),
          (32, 512, 16, jnp.bfloat16), (8, 512, 256, jnp.float32))


def log(*parts):
  print(f"[{time.monotonic() - START:6.1f}s]", *parts, flush=True)


def first_lines(error: BaseException, count: int = 4) -> str:
  lines = traceback.format_exception_only(type(error), error)
  text = [line for line in "".join(lines).strip().splitlines()
          if line.strip() and not line.startswith(("-----", "For simplicity"))]
  return " / ".join(text[:count])[:600]


def describe(config) -> str:
  if config is None:
    return "default"
  text = (f"{config.block_walkers}x{config.block_columns}/k{config.block_k}"
          f" s{config.column_splits} w{config.num_warps}")
  return text + (" 2p" if config.two_phase else "")


def relative_error(actual, expected) -> float:
  actual = jnp.asarray(actual, jnp.float32)
  expected = jnp.asarray(expected, jnp.float32)
  return float(jnp.max(jnp.abs(actual - expected))
               / jnp.maximum(jnp.max(jnp.abs(expected)), 1e-30))


# --------------------------------------------------------------------------
# Reference and the kernel-built unroll.


def reference_grow(block, matrix_t, step, num_back, num_forward):
  """``[P, h, Q, C]`` → canvas: the tests' reference walk in float32.

  Run eagerly (a step is a few dispatched operations; jit would unroll
  every step into one program) and under ``jax.default_matmul_precision
  ("highest")``, as must be a ``jax.vjp`` of it.
  """
  return reference.grow(block.astype(jnp.float32),
                        matrix_t.astype(jnp.float32), step, num_back,
                        num_forward, EPS, normalized=True, xp=jnp)


def kernel_grow(num_back, num_forward, fwd_config, bwd_config, interpret):
  """One phase with the kernels as a differentiable function."""
  kwargs = dict(num_back=num_back, num_forward=num_forward, eps=EPS,
                normalized=True, precision=None, interpret=interpret)

  @jax.custom_vjp
  def grow(block, matrix_t, step):
    return wk.grow_forward(block, matrix_t, step, config=fwd_config, **kwargs)

  def grow_fwd(block, matrix_t, step):
    canvas = grow(block, matrix_t, step)
    return canvas, (canvas, matrix_t, step)

  def grow_bwd(residual, cotangent):
    canvas, matrix_t, step = residual
    return wk.grow_backward(canvas, cotangent, matrix_t, step,
                            config=bwd_config, **kwargs)

  grow.defvjp(grow_fwd, grow_bwd)
  return grow


def unroll(q, a_t, b_t, step, side, configs, interpret, grow_fn=None):
  """Centre-origin vertical_first unroll of ``q [N, C]`` to ``[N, H, W, C]``.

  ``configs = (vertical fwd, vertical bwd, horizontal fwd, horizontal bwd)``.
  """
  batch, channels = q.shape
  back, forward = side // 2, side - 1 - side // 2
  if grow_fn is None:
    vertical = kernel_grow(back, forward, configs[0], configs[1], interpret)
    horizontal = kernel_grow(back, forward, configs[2], configs[3], interpret)
  else:
    vertical = horizontal = functools.partial(grow_fn, num_back=back,
                                              num_forward=forward)
  column = vertical(q.reshape(batch, 1, 1, channels), b_t, step)
  rows = horizontal(column.reshape(batch * side, 1, 1, channels), a_t, step)
  return rows.reshape(batch, side, side, channels)


# --------------------------------------------------------------------------
# Timing.


def time_call(fn, args, rounds: int, calls: int) -> float:
  """Median over ``rounds`` of the mean time of ``calls`` queued calls (s)."""
  jax.block_until_ready(fn(*args))  # Compile and warm up.
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / calls)
  return statistics.median(times)


@dataclasses.dataclass
class Row:
  shape: str
  what: str
  vertical: str
  horizontal: str
  ms: float = float("nan")
  ratio: float = float("nan")
  us_per_step: float = float("nan")
  error: float = float("nan")
  note: str = ""


class Bench:
  """One benchmark shape: its inputs, matmul time and reference map."""

  def __init__(self, batch, channels, side, dtype, args):
    self.batch, self.channels, self.side, self.dtype = (batch, channels, side,
                                                        dtype)
    self.args = args
    self.name = f"N={batch} C={channels} {side}² {jnp.dtype(dtype).name}"
    keys = jax.random.split(jax.random.key(batch * 7919 + channels), 3)
    scale = 0.4 / np.sqrt(channels)
    self.q = jax.random.normal(keys[0], (batch, channels), dtype)
    self.a_t = (scale * jax.random.normal(keys[1], (channels, channels))
                ).astype(dtype)
    self.b_t = (scale * jax.random.normal(keys[2], (channels, channels))
                ).astype(dtype)
    self.step = jnp.float32(1.0)
    # Sequential steps of the unroll: vertical walk, then horizontal walk.
    self.steps = 2 * (side // 2)
    self.lanes = {"vertical": 2 * batch, "horizontal": 2 * batch * side}
    self.reference = None
    self.matmul_s = float("nan")

  def prepare(self):
    rows = self.batch * self.side * self.side
    x = jax.random.normal(jax.random.key(1), (rows, self.channels),
                          self.dtype)
    matmul = jax.jit(jnp.dot)
    self.matmul_s = time_call(matmul, (x, self.a_t), self.args.rounds,
                              self.args.calls)
    del x
    with jax.default_matmul_precision("highest"):
      self.reference = unroll(self.q, self.a_t, self.b_t, self.step,
                              self.side, configs=None, interpret=False,
                              grow_fn=reference_grow)
    log(f"{self.name}: matmul {self.matmul_s * 1e3:.3f} ms, reference ready")

  def run_forward(self, vertical, horizontal) -> Row:
    row = Row(self.name, "fwd", describe(vertical), describe(horizontal))
    try:
      fn = jax.jit(functools.partial(
          unroll, side=self.side,
          configs=(vertical, None, horizontal, None),
          interpret=self.args.quick))
      seconds = time_call(fn, (self.q, self.a_t, self.b_t, self.step),
                          self.args.rounds, self.args.calls)
      row.error = relative_error(fn(self.q, self.a_t, self.b_t, self.step),
                                 self.reference)
      row.ms, row.ratio = seconds * 1e3, self.matmul_s / seconds
      row.us_per_step = seconds * 1e6 / self.steps
    except Exception as error:  # pylint: disable=broad-except
      row.note = first_lines(error)
    return row

  def run_phase(self, phase) -> Row:
    """One phase alone (default config): its µs per step and its share."""
    vertical = phase == "vertical"
    row = Row(self.name, f"fwd {phase} only", "default" if vertical else "-",
              "-" if vertical else "default")
    try:
      back, forward = self.side // 2, self.side - 1 - self.side // 2
      rows = self.batch if vertical else self.batch * self.side
      block = jnp.zeros((rows, 1, 1, self.channels), self.dtype) + 1.0
      block = block.at[..., 0].set(2.0)  # Not constant: var > 0.
      fn = jax.jit(functools.partial(
          wk.grow_forward, num_back=back, num_forward=forward, eps=EPS,
          normalized=True, interpret=self.args.quick))
      seconds = time_call(fn, (block, self.b_t, self.step), self.args.rounds,
                          self.args.calls)
      row.ms, row.ratio = seconds * 1e3, self.matmul_s / seconds
      row.us_per_step = seconds * 1e6 / back
    except Exception as error:  # pylint: disable=broad-except
      row.note = first_lines(error)
    return row

  def run_fwd_bwd(self, configs, label) -> Row:
    row = Row(self.name, "fwd+bwd", label[0], label[1])
    try:
      def loss(q, a_t, b_t, step):
        out = unroll(q, a_t, b_t, step, self.side, configs,
                     self.args.quick)
        return jnp.sum(jnp.square(out.astype(jnp.float32)))

      fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
      seconds = time_call(fn, (self.q, self.a_t, self.b_t, self.step),
                          self.args.rounds, self.args.calls)
      grads = fn(self.q, self.a_t, self.b_t, self.step)
      finite = all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
      row.note = "" if finite else "non-finite gradients"
      row.ms, row.ratio = seconds * 1e3, 3 * self.matmul_s / seconds
      row.us_per_step = seconds * 1e6 / self.steps
    except Exception as error:  # pylint: disable=broad-except
      row.note = first_lines(error)
    return row


# --------------------------------------------------------------------------
# Numerics on small shapes.


def check_numerics(args):
  """Kernel vs float32 reference on small shapes; returns report lines."""
  # Layouts: ((P, h, Q, C), num_back, num_forward).
  vertical = ((8, 1, 1, 256), 12, 11)
  horizontal = ((192, 1, 1, 128), 6, 5)
  block_q = ((2, 3, 24, 128), 5, 4)
  if args.quick:
    vertical, horizontal, block_q = (((4, 1, 1, 32), 3, 2),
                                     ((12, 1, 1, 32), 2, 2),
                                     ((2, 2, 3, 32), 2, 1))
  cases = [(label, dtype, shape, back, forward)
           for dtype in (jnp.bfloat16, jnp.float32)
           for label, (shape, back, forward) in (
               ("vertical", vertical), ("horizontal", horizontal),
               ("block h>1 Q>1", block_q))]
  # Every layout in bfloat16 (the benchmark dtype), float32 for one layout
  # on the GPU; in interpret mode (slow compiles) one case per layout.
  cases = ([cases[0], cases[4], cases[2]] if args.quick
           else cases[:3] + [cases[3]])
  lines = ["| case | dtype | fwd config | bwd config | canvas | d_block | "
           "d_matrix_t | d_step |", "|---|---|---|---|---|---|---|---|"]
  for index, (label, dtype, shape, back, forward) in enumerate(cases):
    lanes = (2 if back and forward else 1) * shape[0] * shape[2]
    cores = 1 if args.quick else None
    fwd_candidates = wk.candidate_configs(lanes, shape[3], dtype,
                                          num_cores=cores)[1:]
    bwd_candidates = wk.candidate_configs(lanes, shape[3], dtype,
                                          backward=True, num_cores=cores)[1:]
    # Defaults; for the bfloat16 vertical case also the first candidate
    # without column splits (no inter-program barrier) and the two-phase one.
    pairs = [(None, None)]
    if label == "vertical" and dtype == jnp.bfloat16:
      unsplit = [[c for c in found if c.column_splits == 1 and not c.two_phase]
                 for found in (fwd_candidates, bwd_candidates)]
      if unsplit[0] and unsplit[1]:
        pairs.append((unsplit[0][0], unsplit[1][0]))
      pairs += [(c, None) for c in fwd_candidates if c.two_phase][:1]
    keys = jax.random.split(jax.random.key(index), 3)
    num_p, height, num_q, channels = shape
    block = jax.random.normal(keys[0], shape, dtype)
    matrix_t = (0.4 / np.sqrt(channels) * jax.random.normal(
        keys[1], (channels, channels))).astype(dtype)
    step = jnp.float32(0.8)
    length = back + height + forward
    cotangent = jax.random.normal(keys[2], (num_p, length, num_q, channels),
                                  dtype)
    with jax.default_matmul_precision("highest"):
      expected, vjp = jax.vjp(
          functools.partial(reference_grow, num_back=back,
                            num_forward=forward),
          block.astype(jnp.float32), matrix_t.astype(jnp.float32), step)
      expected_grads = vjp(cotangent.astype(jnp.float32))
    precision = lax.Precision.HIGHEST if dtype == jnp.float32 else None
    for fwd_config, bwd_config in pairs:
      kwargs = dict(num_back=back, num_forward=forward, eps=EPS,
                    normalized=True, precision=precision,
                    interpret=args.quick)
      cells = []
      try:
        canvas = jax.jit(functools.partial(
            wk.grow_forward, config=fwd_config, **kwargs))(block, matrix_t,
                                                           step)
        cells.append(relative_error(canvas, expected))
        grads = jax.jit(functools.partial(
            wk.grow_backward, config=bwd_config, **kwargs))(
                canvas, cotangent, matrix_t, step)
        cells += [relative_error(g, e) for g, e in zip(grads,
                                                       expected_grads)]
        text = " | ".join(f"{c:.2e}" for c in cells)
      except Exception as error:  # pylint: disable=broad-except
        text = " | ".join(f"{c:.2e}" for c in cells) + " FAILED: " + (
            first_lines(error))
      line = (f"| {label} {shape} nb={back} nf={forward} | "
              f"{jnp.dtype(dtype).name} | {describe(fwd_config)} | "
              f"{describe(bwd_config)} | {text} |")
      lines.append(line)
      log(line)
  return lines


# --------------------------------------------------------------------------
# Main.


def table(rows):
  out = ["| shape | what | vertical | horizontal | ms | ratio | µs/step | "
         "err | note |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    out.append(f"| {r.shape} | {r.what} | {r.vertical} | {r.horizontal} | "
               f"{r.ms:.3f} | {r.ratio:.3f} | {r.us_per_step:.1f} | "
               f"{'-' if r.error != r.error else f'{r.error:.1e}'} | "
               f"{r.note} |")
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="CPU smoke run: interpret mode, tiny shapes.")
  parser.add_argument("--budget_s", type=float, default=120.0,
                      help="Stop starting new configurations after this.")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--calls", type=int, default=5)
  parser.add_argument("--skip_numerics", action="store_true")
  parser.add_argument(
      "--shapes", default="0,1,2,3",
      help="Indices into SHAPES (N, C, H = W, dtype) to time: " + ", ".join(
          f"{i}: {n}/{c}/{s}/{jnp.dtype(d).name}"
          for i, (n, c, s, d) in enumerate(SHAPES)))
  parser.add_argument("--output", default=None,
                      help="Also write the report (markdown) here.")
  args = parser.parse_args()
  # jax >= 0.11 deprecates the Pallas Triton backend (a warning per lowering).
  warnings.filterwarnings("ignore", "The Pallas Triton backend",
                          DeprecationWarning)
  device = jax.devices()[0]
  log(f"jax {jax.__version__}, device {device.device_kind} "
      f"({device.platform}), SMs {getattr(device, 'core_count', '?')}")
  if args.quick:
    args.rounds, args.calls, args.budget_s = 1, 1, float("inf")
  report = []
  if not args.skip_numerics:
    report += ["## Numerics (max relative error vs float32 reference)", ""]
    report += check_numerics(args) + [""]

  if args.quick:
    shapes = [(2, 32, 6, jnp.bfloat16)]
  else:
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")]
  cores = 1 if args.quick else None  # Interpret mode: no column splits.
  benches = []
  rows = []

  def over_budget():
    return time.monotonic() - START > args.budget_s

  def record(row):
    rows.append(row)
    log(table([row])[-1])

  # Stage 1: defaults, every shape (fwd, then fwd+bwd).
  for batch, channels, side, dtype in shapes:
    if over_budget():
      break
    bench = Bench(batch, channels, side, dtype, args)
    try:
      bench.prepare()
    except Exception as error:  # pylint: disable=broad-except
      log(f"{bench.name}: preparation failed: {first_lines(error)}")
      continue
    benches.append(bench)
    for phase, lanes in bench.lanes.items():
      defaults = [wk.default_config(lanes, channels, dtype, backward=b,
                                    num_cores=cores) for b in (False, True)]
      log(f"{bench.name} {phase}: {lanes} lanes, default fwd "
          f"{describe(defaults[0])}, bwd {describe(defaults[1])}")
    record(bench.run_forward(None, None))
    record(bench.run_fwd_bwd((None,) * 4, ("default", "default")))

  def candidates(bench, phase, backward=False):
    found = wk.candidate_configs(bench.lanes[phase], bench.channels,
                                 bench.dtype, backward=backward,
                                 num_cores=cores)[1:]
    return found[:1] if args.quick else found

  # Stage 2: forward candidates of the horizontal phase (most of the FLOPs),
  # then of the vertical phase (latency-bound), shape by shape.
  for phase in ("horizontal", "vertical"):
    for bench in benches:
      for config in candidates(bench, phase):
        if over_budget():
          break
        record(bench.run_forward(*((config, None) if phase == "vertical"
                                   else (None, config))))
  # Stage 3: where the forward time goes (each phase alone, defaults).
  for bench in benches:
    for phase in ("vertical", "horizontal"):
      if over_budget():
        break
      record(bench.run_phase(phase))
  # Stage 4: backward candidates of the horizontal phase.
  for bench in benches:
    for config in candidates(bench, "horizontal", backward=True)[:2]:
      if over_budget():
        break
      record(bench.run_fwd_bwd((None, None, None, config),
                               ("default", "bwd " + describe(config))))
  if over_budget():
    log("time budget reached: the remaining configurations were skipped")

  report += ["## Timings (ratio: matmul time / time; fwd+bwd against three "
             "matmuls; 'only' rows: one phase, µs per step of that phase)",
             ""] + table(rows) + ["", "## Best per shape", ""]
  for bench in benches:
    for what in ("fwd", "fwd+bwd"):
      done = [r for r in rows if r.shape == bench.name and r.what == what
              and not r.note and r.ratio == r.ratio]
      if done:
        best = max(done, key=lambda r: r.ratio)
        report.append(
            f"- {bench.name} {what}: {best.ms:.3f} ms, ratio "
            f"{best.ratio:.3f} (matmul {bench.matmul_s * 1e3:.3f} ms); "
            f"vertical {best.vertical}, horizontal {best.horizontal}")
  text = "\n".join(report)
  print("\n" + text, flush=True)
  if args.output:
    with open(args.output, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  log("done")


if __name__ == "__main__":
  main()
