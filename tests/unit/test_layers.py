"""The layers of docs/architecture.md, held by the code.

The contracts live in pyproject.toml (`[tool.importlinter]`) and run in scripts/test. Here: they
hold on this tree, they fail when a forbidden import is added, the docs table says exactly what
they say, and three rules no import contract can express are checked on the source: no import of
another package's private module (also a contract, but this one names the file), no SQL outside
the store, no provider path built by hand in the engine.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "orchestrator"
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {contract["id"]: contract for contract in CONFIG["contracts"]}


def lint_imports(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` run in `project`, reading its pyproject.toml and its `orchestrator/`."""
    executable = Path(sys.executable).with_name("lint-imports")
    # PYTHONPATH: a copy must shadow the editable install, which the venv would find otherwise.
    # COLUMNS: contract names are matched in the output, so they must not be wrapped.
    env = {**os.environ, "PYTHONPATH": str(project), "COLUMNS": "300"}
    return subprocess.run(
        [str(executable), "--no-cache", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}{result.stderr}"


def test_a_forbidden_import_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    engine_init = tmp_path / "orchestrator" / "engine" / "__init__.py"
    source = engine_init.read_text()
    if not source.endswith("\n"):
        source += "\n"
    line = source.count("\n") + 1
    engine_init.write_text(source + "import orchestrator.kafka\n")

    result = lint_imports(tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode != 0, f"lint-imports passed with engine -> kafka:\n{output}"
    broken = output.partition("Broken contracts")[2]
    name = CONTRACTS["engine-without-edges"]["name"]
    section = broken.partition(name)[2]
    assert section, f"the contract {name!r} is not reported broken:\n{output}"
    # This exact import, so the test cannot pass on an engine -> kafka import the tree already has.
    assert re.search(rf"orchestrator\.engine -> orchestrator\.kafka \(l\.{line}\)", section), (
        f"{name!r} does not name the added import (engine/__init__.py line {line}):\n{output}"
    )


# -- the docs table --------------------------------------------------------------------------------


def layer_model() -> tuple[list[list[str]], dict[str, bool]]:
    """The layers contract: names per layer, top first, and whether each layer's names are
    independent of each other (`|`) or not (`:`)."""
    layers: list[list[str]] = []
    independent: dict[str, bool] = {}
    for raw in CONTRACTS["layers"]["layers"]:
        separator = ":" if ":" in raw else "|"
        names = [part.strip().strip("()") for part in raw.split(separator)]
        layers.append(names)
        for name in names:
            independent[name] = separator == "|"
    return layers, independent


def allowed_by_contracts() -> dict[str, set[str]]:
    """For each top-level name in `orchestrator`, what the contracts let it import directly."""
    layers, independent = layer_model()
    allowed: dict[str, set[str]] = {}
    for rank, names in enumerate(layers):
        below = {name for lower in layers[rank + 1 :] for name in lower}
        for name in names:
            siblings = set() if independent[name] else set(names) - {name}
            allowed[name] = below | siblings
    for contract in CONFIG["contracts"]:
        if contract["type"] != "forbidden":
            continue
        forbidden = {
            module.removeprefix("orchestrator.")
            for module in contract["forbidden_modules"]
            if module.startswith("orchestrator.")
        }
        for source in contract["source_modules"]:
            allowed[source.removeprefix("orchestrator.")] -= forbidden
    return allowed


def allowed_by_docs() -> dict[str, set[str]]:
    """The Layers table of docs/architecture.md: `| layer | modules | what it is | may import |`."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.partition("\n## Layers\n")[2].partition("\n## ")[0]
    assert section, "docs/architecture.md has no '## Layers' section"
    every = set(allowed_by_contracts())
    table: dict[str, set[str]] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].isdigit():
            continue
        may_import = cells[3]
        for name in re.findall(r"`([\w.]+)`", cells[1]):
            names = set(re.findall(r"`([\w.]+)`", may_import))
            table[name] = every - {name} if may_import.startswith("everything") else names
    return table


def test_the_docs_table_says_what_the_contracts_say() -> None:
    contracts, docs = allowed_by_contracts(), allowed_by_docs()
    assert sorted(docs) == sorted(contracts), "the docs table and the layers contract list other modules"
    differences = [
        f"{name}: docs also allow {sorted(docs[name] - contracts[name])}, "
        f"contracts also allow {sorted(contracts[name] - docs[name])}"
        for name in sorted(contracts)
        if docs[name] != contracts[name]
    ]
    assert not differences, "docs/architecture.md 'Layers' disagrees with pyproject.toml:\n" + "\n".join(
        differences
    )


def test_every_top_level_module_has_a_layer() -> None:
    """The contract is exhaustive too; this says which module is missing before anything runs."""
    on_disk = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    on_disk |= {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    missing = on_disk - set(allowed_by_contracts())
    assert not missing, f"give these a layer in pyproject.toml and a row in the docs: {sorted(missing)}"


# -- source scans ----------------------------------------------------------------------------------


def python_files(under: Path) -> Iterator[Path]:
    yield from sorted(path for path in under.rglob("*.py") if "__pycache__" not in path.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_private(segment: str) -> bool:
    return segment.startswith("_") and not segment.startswith("__")


def imported_modules(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, lazy ones included; for
    `from package import name`, also `package.name` when that is a module on disk."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                candidate = ROOT.joinpath(*f"{module}.{alias.name}".split("."))
                if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
                    yield node.lineno, f"{module}.{alias.name}"


def test_no_module_imports_another_packages_private_module() -> None:
    offences = []
    for path in python_files(PACKAGE):
        importer = module_name(path)
        for line, module in imported_modules(path, ast.parse(path.read_text(), filename=str(path))):
            if not module.startswith("orchestrator."):
                continue
            segments = module.split(".")
            private = next((i for i, segment in enumerate(segments) if is_private(segment)), None)
            if private is None:
                continue
            owner = ".".join(segments[:private])
            if importer != owner and not importer.startswith(owner + "."):
                offences.append(f"{path.relative_to(ROOT)}:{line}: imports {module} (private to {owner})")
    assert not offences, "private modules imported from outside their package:\n" + "\n".join(offences)


def string_literals(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, text) of every string constant, f-string parts included; docstrings left out (they
    describe statements and paths, they do not run or build them)."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


SQL = re.compile(r"\b(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|DATABASE))\b")
# localstack creates the database that dev, the demo and the tests then migrate: it runs before
# there is a schema, and it stands alone (the `tools-standalone` contract), so it cannot use the store.
SQL_ALLOWED = {
    ("orchestrator/localstack/postgres.py", "SELECT 1 FROM pg_database WHERE datname = $1"),
    ("orchestrator/localstack/postgres.py", "CREATE DATABASE"),
}


def test_no_sql_outside_the_store() -> None:
    offences = []
    for path in python_files(PACKAGE):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("orchestrator/store/"):
            continue
        for line, text in string_literals(ast.parse(path.read_text(), filename=str(path))):
            if not SQL.search(text):
                continue
            if any(relative == allowed and text.startswith(start) for allowed, start in SQL_ALLOWED):
                continue
            first_line = text.strip().splitlines()[0]
            offences.append(f"{relative}:{line}: {first_line[:90]}")
    assert not offences, "SQL outside orchestrator/store/:\n" + "\n".join(offences)


@pytest.mark.parametrize("fragment", ["/orders", "/subscriptions"])
def test_the_engine_builds_no_provider_path(fragment: str) -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()[:90]!r}"
        for path in python_files(PACKAGE / "engine")
        for line, text in string_literals(ast.parse(path.read_text(), filename=str(path)))
        if fragment in text
    ]
    assert not offences, "provider paths built in the engine (use orchestrator.connect):\n" + "\n".join(
        offences
    )
