"""The package as users get it: import layers that hold, and a wheel that
installs, imports and trains outside the source tree."""

import ast
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

from tests import helpers

PACKAGE = pathlib.Path(helpers.REPO_ROOT) / "finola_jax"
# Each subpackage's layer; a module imports only from its own package or a
# lower layer. ``data`` and ``train`` share a layer and import neither other.
LAYERS = {"data": 1, "train": 1, "models": 2, "tasks": 3, "runner": 4}


def _package_of(module: str) -> str:
  """``finola_jax.X.y`` → ``X`` if X is a subpackage, else ``""`` (the core)."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def _imported_modules(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_every_folder_is_a_package():
  folders = {p.parent for p in PACKAGE.rglob("*.py")
             if "__pycache__" not in p.parts}
  assert not [str(f) for f in folders if not (f / "__init__.py").exists()]


def test_no_module_imports_from_a_layer_above_it():
  upward = []
  for path in sorted(PACKAGE.rglob("*.py")):
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    own = _package_of(module)
    for imported in _imported_modules(path):
      if not imported.startswith("finola_jax."):
        continue
      other = _package_of(imported)
      if other != own and LAYERS.get(other, 0) >= LAYERS.get(own, 0):
        upward.append(f"{module} imports {imported}")
  assert not upward, upward


# Run by the installed package's interpreter, outside the source tree: imports
# every module the source tree has (from the venv, not the editable install
# of the system site-packages) and trains two steps of the tiny config.
_INSTALLED_CHECK = """
import importlib, importlib.util, json, os, pkgutil, sys
venv, expected, config_file, overrides, workdir = sys.argv[1:]
import finola_jax
installed = sorted(
    [finola_jax.__name__] + [m.name for m in pkgutil.walk_packages(
        finola_jax.__path__, finola_jax.__name__ + ".")])
missing = sorted(set(json.loads(expected)) - set(installed))
assert not missing, f"not in the wheel: {missing}"
for name in installed:
  module = importlib.import_module(name)
  assert module.__file__.startswith(venv), (name, module.__file__)
from finola_jax.runner import trainer
spec = importlib.util.spec_from_file_location("config", config_file)
config_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(config_module)
config = config_module.get_config()
config.update(json.loads(overrides))
metrics = trainer.train_and_evaluate(config, workdir)
print("METRICS", json.dumps(metrics))
"""


def _source_modules():
  return sorted(
      ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
      .removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
      if "__pycache__" not in p.parts)


def test_wheel_installs_imports_and_trains(tmp_path):
  """The wheel, installed (not editable) with ``[train]`` in a fresh venv."""
  source = tmp_path / "source"  # A copy: building writes build/ and egg-info.
  shutil.copytree(PACKAGE, source / "finola_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(pathlib.Path(helpers.REPO_ROOT) / name, source)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

  def run(*command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True,
                          env=env, **kwargs)

  # Nothing is downloaded: the build uses the installed setuptools, and the
  # venv sees the system's packages, which satisfy [train] (--no-index).
  run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
      "-q", "-w", str(tmp_path / "dist"), str(source))
  wheel, = (tmp_path / "dist").glob("finola_jax-*.whl")
  venv = tmp_path / "venv"
  run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
      str(venv))
  python = str(venv / "bin" / "python")
  run(sys.executable, "-m", "pip", "--python", python, "install", "-q",
      "--no-index", "--no-build-isolation", f"{wheel}[train]")

  outside = tmp_path / "outside"
  outside.mkdir()
  overrides = dict(helpers.TINY_RUN, steps=2, checkpoint_every=2)
  result = subprocess.run(
      [python, "-c", _INSTALLED_CHECK, str(venv), json.dumps(_source_modules()),
       os.path.join(helpers.REPO_ROOT, "experiments", "configs",
                    "reconstruct.py"), json.dumps(overrides),
       str(outside / "workdir")],
      cwd=outside, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-6000:]
  metrics = json.loads(result.stdout.split("METRICS", 1)[1])
  assert all(math.isfinite(v) for v in metrics.values()), metrics
  assert helpers.checkpoint_steps(outside / "workdir") == [2]
