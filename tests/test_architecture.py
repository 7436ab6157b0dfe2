"""The layering rules of docs/architecture.md, checked on the source (AST), so a change that breaks them fails.

* No import circle among ``voice_runtime`` modules (module-level imports; ``TYPE_CHECKING`` blocks and
  imports inside functions are deliberate late bindings and do not count).
* The session imports no transport, no server and no provider.
* No module outside the session package calls a private method or attribute of a session.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "voice_runtime"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    sources = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(), str(path))
        imports = _top_level_imports(tree, name, path.name == "__init__.py")
        graph[name] = {i for i in imports if i in sources and i != name}
    return graph


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                dfs(target, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node, [])
    # A package importing its own submodules is how Python packages work; a submodule importing its package
    # back is not (the package's __init__ is only re-exports here, but keep real circles out).
    real = [c for c in cycles if not all(a.startswith(c[0]) or c[0].startswith(a) for a in c)]
    assert not real, "import circles: " + "; ".join(" -> ".join(c) for c in real)


def test_the_session_imports_no_transport_server_or_provider() -> None:
    graph = _graph()
    for name, imports in graph.items():
        if name.startswith("voice_runtime.session"):
            bad = {i for i in imports if i.startswith(("voice_runtime.server", "voice_runtime.transports", "voice_runtime.providers"))}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_no_module_outside_the_session_calls_private_session_state() -> None:
    offenders: list[str] = []
    for path in PACKAGE.rglob("*.py"):
        if "session" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if name == "session":
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} session.{node.attr}")
    assert not offenders, offenders
