"""The package's shape: each layer imports only from layers below it, and only the CLI
builds argparse parsers. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wsistore"

#: The data flow, ground floor first: a module may import from its own layer and below.
LAYERS: list[tuple[str, ...]] = [
    ("_version", "errors", "checksums", "geometry", "progress", "psnr", "weights"),
    ("readers", "dicom", "dicomweb", "sample", "outputs"),
    ("tissue", "codecs"),
    ("degradation", "partial"),
    ("archive",),
    ("models",),
    ("training",),
    ("restoration",),
    ("reports",),
    ("serve",),
    ("napari_plugin",),
    ("batch",),
    ("cli",),
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer of the data flow; add it to LAYERS")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in names if name.startswith("wsistore.")]


MODULES = [(name, path) for name, path in _modules() if name not in ("wsistore", "wsistore.__main__")]


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_only_from_its_own_layer_or_below(module: str, path: Path) -> None:
    own = _layer(module)
    upward = [f"line {line}: {name}" for line, name in _imports(path) if _layer(name) > own]
    assert not upward, f"{module} imports from a later layer: {upward}"


def test_only_the_cli_builds_parsers() -> None:
    offenders = []
    for module, path in _modules():
        if module.startswith("wsistore.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("ArgumentParser", "add_argument", "add_parser"):
                offenders.append(f"{module}:{node.lineno}")
    assert not offenders, offenders


GUI_PACKAGES = ("napari", "npe2", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy", "magicgui")


def test_only_the_napari_plugin_imports_napari_or_qt() -> None:
    offenders = []
    for module, path in _modules():
        if module.startswith("wsistore.napari_plugin"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{module}:{node.lineno}" for n in names if n.split(".")[0] in GUI_PACKAGES]
    assert not offenders, offenders


def test_the_top_level_names_load_lazily_and_are_the_library_functions() -> None:
    import subprocess
    import sys

    code = (
        "import sys, wsistore\n"
        "assert 'torch' not in sys.modules and 'zarr' not in sys.modules\n"
        "from wsistore.archive.writer import ingest\n"
        "from wsistore.restoration.pipeline import restore\n"
        "assert wsistore.ingest is ingest and wsistore.restore is restore\n"
        "assert callable(wsistore.open) and callable(wsistore.verify) and wsistore.Archive.open\n"
        "import wsistore.restoration.ondemand, wsistore.serve.app, wsistore.cli\n"
        f"assert not [m for m in sys.modules if m.split('.')[0] in {GUI_PACKAGES!r}], 'napari or Qt imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
