"""The house's boundaries, checked on the import graph built from the source (lazy imports included).

The layout reads in the order data flows: media/ -> features/ -> data/ -> model/ -> pipeline/ -> cli.py, over a
foundation of errors, config, atomic and provenance (docs/architecture.md). Each test names the rule it holds.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmemo"
FOUNDATION = {"mmemo", "mmemo.errors", "mmemo.config", "mmemo.atomic", "mmemo.provenance"}
SERVING = ("mmemo.pipeline.predict", "mmemo.pipeline.stream", "mmemo.pipeline.evaluate", "mmemo.pipeline.export")
# The training use cases: only these (and the CLI) may import the trainer.
TRAINER_USERS = {"mmemo.pipeline.crossval", "mmemo.pipeline.demo", "mmemo.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(mmemo modules, top-level third-party names) that ``name`` imports anywhere in its source: at the top, in
    functions, under TYPE_CHECKING. Importing ``a.b.c`` also runs the packages ``a.b`` and ``a``: they count, but for
    ``name``'s own packages, which are already running when it is imported."""
    is_pkg = path.name == "__init__.py"
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    found, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for t in targets:
            if t.split(".")[0] != "mmemo":
                external.add(t.split(".")[0])
                continue
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            while t:
                if t != name and t not in own:
                    found.add(t)
                t = t.rpartition(".")[0]
    return found, external


GRAPH: dict[str, set[str]] = {}
EXTERNAL: dict[str, set[str]] = {}
for _name, _path in MODULES.items():
    GRAPH[_name], EXTERNAL[_name] = _imports(_name, _path)


def _layer(module: str) -> str:
    """The room a module sits in: its subpackage under mmemo, or the module itself at the top."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in GRAPH[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_the_graph_is_read_from_the_source():
    """Sanity: the parser sees the imports it must (a lazy one included), so the rules below are not vacuous."""
    assert len(MODULES) > 30
    assert "mmemo.pipeline.train" in GRAPH["mmemo.pipeline.crossval"]
    assert "mmemo.features.audio" in GRAPH["mmemo.features"]  # the package registers its features
    assert "mmemo.pipeline.extract" in GRAPH["mmemo.cli"]  # imported inside the command function
    assert "mmemo.features" in GRAPH["mmemo.pipeline.stream"]  # a submodule import runs its package


def test_no_import_cycle_between_modules():
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH))


def test_no_import_cycle_between_rooms():
    """Collapsed to rooms (media, features, data, model, pipeline and the top-level modules), still no circle."""
    rooms: dict[str, set[str]] = {}
    for n, deps in GRAPH.items():
        rooms.setdefault(_layer(n), set()).update(_layer(d) for d in deps if _layer(d) != _layer(n))
    rooms.pop("mmemo", None)  # the package itself only holds __version__
    for deps in rooms.values():
        deps.discard("mmemo")
    assert _cycle(rooms) is None, " -> ".join(_cycle(rooms))


@pytest.mark.parametrize(
    ("room", "may_import"),
    [
        ("mmemo.errors", set()),
        ("mmemo.config", {"mmemo.errors"}),
        ("mmemo.atomic", set()),
        ("mmemo.provenance", set()),
        ("mmemo.media", {"mmemo.errors"}),
        ("mmemo.features", {"mmemo.errors", "mmemo.config", "mmemo.media"}),
        ("mmemo.data", {"mmemo.errors", "mmemo.config", "mmemo.atomic", "mmemo.media"}),
        ("mmemo.model", {"mmemo.errors", "mmemo.config", "mmemo.atomic"}),
    ],
)
def test_each_room_imports_downward_only(room: str, may_import: set[str]):
    """data/ never imports features/ or pipeline/; model/ nothing above it; media/ and features/ only below."""
    for n, deps in GRAPH.items():
        if _layer(n) != room:
            continue
        bad = {d for d in deps if _layer(d) not in may_import | {room, "mmemo"}}
        assert not bad, f"{n} imports {sorted(bad)}"


def test_serving_code_never_reaches_the_trainer():
    """predict, stream, evaluate and export do not import the trainer, directly or through anything they import."""
    for n in SERVING:
        assert "mmemo.pipeline.train" not in _reach(n), n


def test_only_the_training_use_cases_import_the_trainer():
    users = {n for n, deps in GRAPH.items() if "mmemo.pipeline.train" in deps}
    assert users <= TRAINER_USERS, sorted(users - TRAINER_USERS)


def test_decoding_and_features_never_import_torch():
    """media/ and features/ run in extraction workers and in the live decoder: no torch there."""
    for n in GRAPH:
        if _layer(n) in ("mmemo.media", "mmemo.features"):
            assert "torch" not in EXTERNAL[n] and not any(_layer(d) == "mmemo.model" for d in _reach(n)), n


def test_private_names_stay_in_their_module():
    """No module imports another module's _private name (the rooms talk through public names)."""
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmemo"):
                offenders += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not [o for o in offenders if not o.endswith("__version__")], offenders


def test_serving_really_loads_without_the_trainer():
    """The same rule at run time: importing the serving modules in a fresh interpreter leaves the trainer unloaded
    and media/ + features/ leave torch unloaded."""
    code = (
        "import sys\n"
        "import mmemo.media.decode, mmemo.media.live, mmemo.features.clip, mmemo.data.features_dir\n"
        "assert 'torch' not in sys.modules, 'torch loaded by decoding/features'\n"
        f"import {', '.join(SERVING)}\n"
        "assert 'mmemo.pipeline.train' not in sys.modules, 'the trainer was loaded'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
