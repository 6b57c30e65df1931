"""The package's shape: data flows one way through the stage subpackages, no module reaches into another's
private names, functions and classes stay short, and the README documents every setting of the table."""

import ast
import re
from pathlib import Path

import pytest

from ortgate.spec.options import OPTIONS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ortgate"
# Lower layers first; a module may import its own layer and the layers below it.
LAYERS = [("errors", "files", "cache", "isa"), ("spec",), ("sources",), ("build",), ("measure",), ("verdict",),
          ("diagnose",), ("record",), ("history",), ("report",), ("session", "ab"),
          ("plugin", "cli", "explain_cli", "history_cli")]
LONGEST_FUNCTION, LONGEST_CLASS = 60, 200


def _layer(module: str) -> int:
    if module == "ortgate":  # the package's __init__: above everything
        return len(LAYERS)
    part = module.split(".")[1] if "." in module else ""
    return next((i for i, names in enumerate(LAYERS) if part in names), -1)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        yield name, path, ast.parse(path.read_text())


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ortgate":
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names if a.name.split(".")[0] == "ortgate")


def test_every_module_belongs_to_a_layer():
    assert [name for name, _, _ in _modules() if _layer(name) < 0] == []


def test_imports_never_run_upward_or_reach_private_names():
    upward, private = [], []
    for name, _, tree in _modules():
        for target, names in _imports(tree):
            if _layer(target) > _layer(name):
                upward.append(f"{name} imports {target}")
            private += [f"{name} imports {target}.{n}" for n in names if n.startswith("_")]
    assert upward == [] and private == []


def test_functions_and_classes_stay_short():
    long = []
    for _, path, tree in _modules():
        for node in ast.walk(tree):
            limit = LONGEST_CLASS if isinstance(node, ast.ClassDef) else LONGEST_FUNCTION
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.end_lineno - node.lineno + 1 > limit:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert long == []


def test_the_layer_rule_catches_an_upward_import(tmp_path):
    tree = ast.parse("from ortgate.report.tables import render_markdown\n")
    assert [t for t, _ in _imports(tree) if _layer(t) > _layer("ortgate.build.builder")] == ["ortgate.report.tables"]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_the_readme_documents_every_setting(option):
    table = re.findall(r"^\| (`--ortgate-[^|]*)\|", (ROOT / "README.md").read_text(), re.M)
    assert any(f"`--ortgate-{option.name.replace('_', '-')}`" in row for row in table), option.name
