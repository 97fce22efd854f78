"""The docs keep in step with the CLI and the tree: every subcommand and flag is in the
manual, every link resolves, the module table names the modules there are."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.main import get_command

from ntx.cli import app
from tests.helpers import REPO

DOCS = sorted([REPO / "README.md", REPO / "bench" / "README.md", *(REPO / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def commands() -> Iterator[tuple[str, object]]:
    """(`ntx runs show`, its click command) for every command, groups included."""

    def walk(path: str, command: object) -> Iterator[tuple[str, object]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(f"{path} {name}", sub)

    yield from walk("ntx", get_command(app))


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {
        slug(line.lstrip("#"))
        for line in path.read_text().splitlines()
        if re.match(r"#{1,6} ", line)
    }


def test_the_manual_names_every_subcommand_and_flag() -> None:
    manual = (REPO / "docs" / "commands.md").read_text()
    missing = []
    for path, command in commands():
        if path != "ntx" and f"`{path}" not in manual:
            missing.append(path)
        for param in getattr(command, "params", []):
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("--") and not re.search(rf"`{re.escape(flag)}\b", manual):
                    missing.append(f"{path} {flag}")
    assert missing == []


def test_the_manual_names_every_environment_variable() -> None:
    manual = (REPO / "docs" / "commands.md").read_text()
    envvars = {
        param.envvar
        for _, command in commands()
        for param in getattr(command, "params", [])
        if getattr(param, "envvar", None)
    }
    assert envvars and sorted(name for name in envvars if f"`{name}`" not in manual) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        where = (doc.parent / file).resolve() if file else doc
        if not where.exists() or (anchor and where.is_file() and anchor not in anchors(where)):
            broken.append(target)
    assert broken == []


def test_nothing_points_outside_the_repository() -> None:
    for path in [*DOCS, *REPO.glob("ntx/**/*.py")]:
        assert "shared/design" not in path.read_text(), path


def test_the_readme_stays_short_and_opens_with_the_two_commands() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    head = "\n".join(lines[:20])
    assert "./bin/ntx backfill --demo" in head and "./bin/test" in head


def test_the_module_table_matches_the_tree() -> None:
    text = (REPO / "docs" / "how-it-works.md").read_text()
    listed = set(re.findall(r"^\| `(ntx/[\w/.]+)` \|", text, re.M))
    assert listed and all((REPO / entry).exists() for entry in listed), listed
    modules = {
        str(path.relative_to(REPO))
        for path in (REPO / "ntx").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    unlisted = sorted(
        module
        for module in modules
        if module not in listed and not any(module.startswith(d) for d in listed if d.endswith("/"))
    )
    assert unlisted == []


def test_no_module_of_ntx_imports_itself_back_through_others() -> None:
    """Imports point one way: the graph of ntx's modules (package __init__ files included)
    has no cycle."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in (REPO / "ntx").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ntx"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("ntx")}
        graph[name] = targets - {name}
    for name in list(graph):
        graph[name] &= graph.keys()
    assert sum(len(targets) for targets in graph.values()) > 50  # the graph was read
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle.extend([*trail, name, target])
            elif target not in state:
                visit(target, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycle == []
