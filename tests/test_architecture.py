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


# Who may import whom: each layer imports only from layers above it in this list (and from itself).
# A package is a subpackage or single-file module of `transferlab`; imports anywhere in a file count
# (function-level ones too). Strategies sit above the module: a strategy may bring its own module
# (`strategies.joint`), as Lightning's `BaseFinetuning` callbacks know the LightningModule; the module
# knows strategies and regularizers by their methods only.
LAYERS = [
    {"core"},  # errors, config, names, settings: no torch
    {"backbones", "selection", "metrics"},  # timm models and stages; transferability scores; metric sets
    {"data"},  # data sources and modules, feature caches
    {"module"},  # TransferModule: backbone, head, loss, metrics
    {"evaluation"},  # scoring a trained module: extra test sets, calibration, WiSE-FT, soups
    {"strategies"},  # what trains, param groups, and each strategy's run hooks
    {"tuning"},  # the Optuna sweeper, pruning, CV folds
    {"run"},  # one job: build, fit, test, record
    {"sources"},  # source selection: runs jobs to score candidates
    {"report"},  # sweep directories -> tables and plots
    {"train", "stages", "demo", "demo_sources", "__init__"},  # entry points
    {"select", "sweep_all"},  # entry points over entry points (select runs train's jobs)
]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imported(path, module: str) -> set[str]:
    """The `transferlab` modules a file imports (`from transferlab import x` names `transferlab.x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            source = ".".join(p for p in (base, node.module or "") if p)
            if node.module and not (node.level == 0 and node.module == "transferlab"):
                found.add(source)
            else:  # `from transferlab import x` / `from . import x`: the module x
                found |= {f"{source}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m == "transferlab" or m.startswith("transferlab.")}


def layer_violations(root) -> tuple[set[str], list[str]]:
    """(packages missing from LAYERS, imports that go up or sideways) in the tree `root/transferlab`."""
    rank = {package: i for i, layer in enumerate(LAYERS) for package in layer}
    unplaced, upward = set(), []
    for path in sorted((root / "transferlab").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        own = _package(module)
        unplaced |= {own} - set(rank)
        for dep in sorted(_imported(path, module)):
            theirs = _package(dep)
            unplaced |= {theirs} - set(rank)
            if theirs != own and rank.get(theirs, -1) >= rank.get(own, len(LAYERS)):
                upward.append(f"{module} imports {dep} ({own} may not import {theirs})")
    return unplaced, upward


def test_layers_import_only_from_layers_below():
    unplaced, upward = layer_violations(SRC)
    assert unplaced == set(), f"place these packages in LAYERS: {sorted(unplaced)}"
    assert upward == []


def test_the_layer_rule_catches_upward_and_sideways_imports(tmp_path):
    package = tmp_path / "transferlab"
    package.mkdir()
    (package / "module.py").write_text("def f():\n    from transferlab.run.checkpoint import rng_state\n")
    (package / "tuning.py").write_text("from transferlab import run\n")
    (package / "report.py").write_text("from transferlab.core import errors\nfrom . import sources\n")
    (package / "newthing.py").write_text("import os\n")
    unplaced, upward = layer_violations(tmp_path)
    assert unplaced == {"newthing"}
    assert upward == [
        "transferlab.module imports transferlab.run.checkpoint (module may not import run)",
        "transferlab.tuning imports transferlab.run (tuning may not import run)",
    ]
