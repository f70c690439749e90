"""The structure holds: one direction of dependencies, small report modules, declared dependencies."""

from __future__ import annotations

import ast
import sys

import tomllib

from .conftest import REPO

SRC = REPO / "src"
# import name -> distribution name, where they differ
DISTRIBUTIONS = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "pytorch_lightning": "pytorch-lightning",
    "lightning_fabric": "pytorch-lightning",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "wandb_workspaces": "wandb-workspaces",
}


def imports() -> dict[str, set[str]]:
    """module -> the modules it imports (at any depth of the file)."""
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        found[name] = deps
    return found


def test_no_module_imports_itself_in_a_cycle():
    graph = imports()
    own = set(graph)

    def owner(dep: str) -> str | None:
        while dep and dep not in own:
            dep = dep.rpartition(".")[0]
        return dep or None

    edges = {m: {owner(d) for d in deps} - {None, m} for m, deps in graph.items()}
    edges = {
        m: {d for d in ds if not m.startswith(d + ".")} for m, ds in edges.items()
    }  # a package's own init
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_report_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (SRC / "transferlab" / "report").glob("*.py")}
    assert max(sizes.values()) <= 330, sizes


def test_every_imported_package_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {
        d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        for d in project["dependencies"]
    }
    for extra in project["optional-dependencies"].values():
        declared |= {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for d in extra}
    stdlib = set(sys.stdlib_module_names)
    third_party = (
        {d.split(".")[0] for deps in imports().values() for d in deps}
        - stdlib
        - {"transferlab", "hydra_plugins", "__future__"}
    )
    undeclared = {m for m in third_party if DISTRIBUTIONS.get(m, m).lower().replace("_", "-") not in declared}
    assert undeclared == set()
