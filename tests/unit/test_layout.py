"""The architecture, checked: public surface, and which modules may talk to databases."""

from __future__ import annotations

import ast
from pathlib import Path

import conveyor

PACKAGE = Path(conveyor.__file__).parent


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_public_api_is_exactly_all() -> None:
    public = {n for n in dir(conveyor) if not n.startswith("_")} - {"annotations", "logging"}
    modules = {n for n in public if type(getattr(conveyor, n)).__name__ == "module"}
    assert public - modules == set(conveyor.__all__) - {"__version__"}
    for name in conveyor.__all__:
        assert hasattr(conveyor, name), name


def test_only_the_store_packages_import_database_drivers() -> None:
    owners = {"sqlite3": "store/sqlite/", "psycopg": "store/postgres/",
              "psycopg_pool": "store/postgres/"}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for driver, package in owners.items():
            if driver in imports_of(path):
                assert rel.startswith(package), f"{rel} imports {driver}"


def test_each_store_is_a_package_of_statements_connections_and_a_store() -> None:
    for backend, connections in (("sqlite", "connection.py"), ("postgres", "connections.py")):
        folder = PACKAGE / "store" / backend
        assert {"statements.py", connections, "store.py"} <= {p.name for p in folder.glob("*.py")}
    assert not (PACKAGE / "store" / "sqlite.py").exists()
    assert not (PACKAGE / "store" / "postgres.py").exists()


def test_no_module_is_over_450_lines() -> None:
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 450, f"{path.relative_to(PACKAGE)} has {lines} lines"


def test_no_sql_outside_the_store() -> None:
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("store/"):
            continue
        text = path.read_text()
        for keyword in ("SELECT ", "UPDATE conveyor", "INSERT INTO", "DELETE FROM"):
            assert keyword not in text, f"SQL ({keyword.strip()}) in {rel}"
