"""The package's two floors, read from the source: stage modules (``python -m momentum_ntk.<stage>``) import only
library modules, never each other; library modules never import a stage and form no import cycle. Also: no
``import *`` and no module over 600 lines (docs/CONTRACT.md, "Code layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "momentum_ntk"

# Entry points: the workflow's stages (one rule family each) and the tools a user runs. Nothing imports them.
STAGES = {
    "fetch", "binarize", "ntk", "train", "theory", "aggregate", "figures", "theory_report", "claims",  # rules
    "regime", "readme_results", "shelve",  # tools: the regime sweep, the README's result blocks, moving results aside
}  # fmt: skip
MAX_LINES = 600


def modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PKG.glob("*.py")) if p.stem != "__init__"}


def imports(path: Path) -> set[str]:
    """Every momentum_ntk module ``path`` imports, at the top or inside a function (a lazy import is an arrow too)."""
    names = set(modules())
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != "momentum_ntk":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found |= {a.name for a in node.names if a.name in names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("momentum_ntk.")}
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    return {name: imports(path) for name, path in modules().items()}


def test_every_module_is_on_one_floor():
    unknown = STAGES - set(modules())
    assert not unknown, f"STAGES names modules that do not exist: {unknown}"
    for name, path in modules().items():
        entry = '__name__ == "__main__"' in path.read_text()
        if name in STAGES:
            assert entry, f"stage module {name} has no `if __name__ == '__main__'` entry"


def test_no_stage_imports_another_stage():
    arrows = sorted((a, b) for a, deps in graph().items() if a in STAGES for b in deps if b in STAGES)
    assert arrows == [], f"stage -> stage imports (move the shared code into a library module): {arrows}"


def test_library_imports_no_stage_and_has_no_cycle():
    g = graph()
    up = sorted((a, b) for a, deps in g.items() if a not in STAGES for b in deps if b in STAGES)
    assert up == [], f"library -> stage imports: {up}"
    state: dict[str, int] = {}

    def visit(m: str, path: tuple[str, ...]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"import cycle: {' -> '.join(path + (m,))}"
        state[m] = 1
        for d in sorted(g[m]):
            visit(d, path + (m,))
        state[m] = 2

    for m in sorted(g):
        visit(m, ())


def test_two_floors():
    """Floors = 1 + the longest chain of stage -> stage arrows + 1 for the library: exactly 2."""
    g = graph()

    def stage_depth(m: str) -> int:
        return 1 + max((stage_depth(d) for d in g[m] if d in STAGES), default=0)

    assert 1 + max(stage_depth(s) for s in STAGES) == 2


def test_the_test_sees_lazy_imports(tmp_path):
    src = tmp_path / "claims.py"
    src.write_text("def main():\n    from momentum_ntk.theory_report import x\n    from momentum_ntk import figures\n")
    assert imports(src) == {"theory_report", "figures"}


@pytest.mark.parametrize("folder", ["src/momentum_ntk", "benchmarks", "tests"])
def test_no_star_imports(folder):
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert all(a.name != "*" for a in node.names), f"{path}: `from {node.module} import *`"


@pytest.mark.parametrize("folder", ["src/momentum_ntk", "benchmarks", "workflow/rules"])
def test_no_module_over_600_lines(folder):
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / folder).glob("*.*"))
            if p.suffix in (".py", ".smk") and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_docs_put_every_module_on_its_floor():
    """The README's Layout rows and the package docstring name every module, each on the floor it is on."""
    import momentum_ntk

    readme = (ROOT / "README.md").read_text()
    rows = {floor: next(line for line in readme.splitlines() if line.startswith(f"| `src/momentum_ntk/` {floor} |"))
            for floor in ("stages", "library")}
    doc = momentum_ntk.__doc__
    stages_doc, library_doc = doc.split("**Library**")
    for name in modules():
        floor = "stages" if name in STAGES else "library"
        assert f"`{name}.py`" in rows[floor], f"README Layout: `{name}.py` missing from the {floor} row"
        assert f"``{name}``" in (stages_doc if name in STAGES else library_doc), f"package docstring: {name}"
