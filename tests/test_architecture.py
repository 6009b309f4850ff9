"""The package's rooms import one way: no module reaches one that imports it (only type hints may look back)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "deepcache"


def runtime_imports(path: Path) -> set[str]:
    """The sibling modules ``path`` imports when it runs (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    hinted = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
              and getattr(block.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in hinted:
            found.update([node.module] if node.module else [alias.name for alias in node.names])
    return found - {"__init__"}


def test_the_engine_modules_import_without_cycles():
    graph = {path.stem: runtime_imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    state: dict[str, str] = {}

    def visit(module: str, chain: tuple[str, ...]) -> None:
        assert state.get(module) != "open", f"import cycle: {' -> '.join(chain + (module,))}"
        if state.get(module) == "done":
            return
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            visit(imported, chain + (module,))
        state[module] = "done"

    for module in sorted(graph):
        visit(module, ())
    assert {"clock", "slots", "passes", "blocks", "engine", "nesting", "session"} <= set(graph)


def test_the_engine_imports_no_webui_module():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            # the adapters import webui modules inside their functions only; never at module level
            if node in tree.body:
                assert not any(name.split(".")[0] in ("modules", "modules_forge", "backend", "ldm_patched")
                               for name in names), (path.name, names)
