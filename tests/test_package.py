"""The package as users get it: import layers that hold, and a wheel that
installs, imports and trains outside the source tree."""

import ast
import os
import pathlib

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
