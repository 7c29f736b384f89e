"""DESIGN §8's dependency direction, checked on the imports of every module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "taskd"
ADAPTERS = ("queue", "store", "dlq", "notify")
PURE = ("dag", "schedule")


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m == "taskd" or m.startswith("taskd.")}


def modules() -> list[tuple[str, set[str]]]:
    out = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        out.append((".".join(("taskd", *rel.parts)), imports_of(path)))
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_adapters_do_not_import_each_other() -> None:
    for module, deps in modules():
        own = layer(module)
        if own in ADAPTERS:
            bad = {d for d in deps if layer(d) in ADAPTERS and layer(d) != own}
            assert not bad, f"{module} imports {bad}"


def test_pure_core_imports_no_adapters_services_or_io() -> None:
    for module, deps in modules():
        if layer(module) in PURE:
            bad = {d for d in deps if layer(d) not in (*PURE, "types", "errors", "clock")}
            assert not bad, f"{module} imports {bad}"


def test_nothing_imports_roles_except_roles_and_the_cli() -> None:
    for module, deps in modules():
        if layer(module) in ("roles", "cli"):
            continue
        assert not {d for d in deps if layer(d) == "roles"}, module


def test_adapters_do_not_import_services_api_or_roles() -> None:
    for module, deps in modules():
        if layer(module) in ADAPTERS:
            bad = {d for d in deps if layer(d) in ("services", "api", "ui", "roles", "cli")}
            assert not bad, f"{module} imports {bad}"
