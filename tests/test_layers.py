"""The import ladder (README: Architecture): every import of the app's packages, parsed, must go down the ladder.

core ← db, trainer, workers.augment ← services ← api, workers ← augloop (the CLI); review_ui talks to the API
only. The doors (api, workers, the CLI) may take from db/ only sessions, models and (workers) the queue itself:
anything else they need is a use case in services/.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "db", "trainer", "services", "api", "workers", "augloop", "review_ui")

# rung → the rungs it may import (besides itself and third-party code)
LADDER: dict[str, set[str]] = {
    "core": set(),
    "db": {"core"},
    "trainer": {"core"},
    "workers.augment": {"core"},
    "services": {"core", "db", "trainer", "workers.augment"},
    "api": {"core", "db", "services", "trainer"},
    "workers": {"core", "db", "services", "trainer", "workers.augment"},
    "review_ui": {"core"},
    "augloop": {"core", "db", "services", "trainer", "workers", "workers.augment", "api", "review_ui"},
}
# What a door may take from db/ directly.
DOOR_DB_MODULES: dict[str, set[str]] = {
    "api": {"db.models", "db.session"},
    "augloop": {"db.models", "db.session"},
    "workers": {"db.models", "db.session", "db.queue", "db.worker_presence"},
}


def rung(module: str) -> str | None:
    if module == "workers.augment" or module.startswith("workers.augment."):
        return "workers.augment"
    top = module.split(".")[0]
    return top if top in PACKAGES else None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, at any depth (lazy imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from db import queue` imports the module db.queue
            found.extend(
                (node.lineno, f"{node.module}.{alias.name}")
                for alias in node.names
                if rung(node.module) is not None
                and (root / node.module.replace(".", "/") / f"{alias.name}.py").is_file()
            )
    return found


def app_files(root: Path) -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py") if "migrations" not in p.parts)


def violations(root: Path = ROOT) -> list[str]:
    out = []
    for path in app_files(root):
        here = rung(module_name(path, root))
        assert here is not None
        for line, target in imports_of(path, root):
            there = rung(target)
            if there is None or there == here:
                continue
            where = f"{path.relative_to(root)}:{line} imports {target}"
            if there not in LADDER[here]:
                out.append(f"{where}: {here} may not import {there}")
            elif there == "db" and here in DOOR_DB_MODULES and target.count(".") >= 1:
                module = ".".join(target.split(".")[:2])
                if module not in DOOR_DB_MODULES[here]:
                    out.append(
                        f"{where}: a door takes only {sorted(DOOR_DB_MODULES[here])} from db/; "
                        "put the use case in services/"
                    )
    return out


def test_every_import_goes_down_the_ladder() -> None:
    found = violations()
    assert not found, "imports that climb the ladder:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from services.review import decide\n", "db may not import services"),
        ("import api.main\n", "db may not import api"),
        ("from db import reviews\n", None),
    ],
)
def test_the_checker_catches_a_climbing_import(tmp_path: Path, source: str, expected) -> None:
    """The check itself can fail: a db module that imports a service is reported. The probe goes into a copy of
    the packages, not the tree (tests run in parallel processes, and a killed run would leave it for lint)."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (tmp_path / "db" / "_ladder_probe.py").write_text(source, encoding="utf-8")
    found = [v for v in violations(tmp_path) if "_ladder_probe" in v]
    if expected is None:
        assert found == []
    else:
        assert found and expected in found[0]


# db/ holds data access, no rule: a request's input is checked in services/ before a query reads it. The one
# refusal of db's own: a database URL that names no database it can open (db.migrate).
DB_MAY_REFUSE_INPUT = {"db/migrate.py"}


def input_checks_in_db(root: Path = ROOT) -> list[str]:
    """db/ files (migrations aside) that raise ValidationFailed: an input check where services/ should make it."""
    found = []
    for path in sorted((root / "db").rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if name.startswith("db/migrations/") or name in DB_MAY_REFUSE_INPUT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and "ValidationFailed" in ast.unparse(node.exc or node):
                found.append(f"{name}:{node.lineno}")
    return found


def test_db_checks_no_request_input(tmp_path: Path) -> None:
    found = input_checks_in_db()
    assert not found, "input checks in db/ (they belong in services/):\n" + "\n".join(found)
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "probe.py").write_text(
        "def f(x):\n    if x < 0:\n        raise ValidationFailed('x', field='x')\n", encoding="utf-8"
    )
    assert input_checks_in_db(tmp_path) == ["db/probe.py:3"]  # the check itself can fail


def test_the_api_and_the_review_ui_start_without_torch(tmp_path: Path) -> None:
    """A service the API imports reached torch at module level (for a helper that needs none): the API process
    held 140,000 more objects, every garbage collection walked them, and a review page took 4 ms more (p50 16.8
    → 20.9 ms, bench/review_latency.py). Models load in workers and in prediction, lazily."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from core.settings import get_settings\n"
        "from db.session import get_engine\n"
        "from api.main import create_app\n"
        "settings = get_settings()\n"
        "create_app(settings, get_engine(settings.resolved_database_url))\n"
        "import review_ui.client, review_ui.state, review_ui.review_flow\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'sentence_transformers'})\n"
        "print(heavy)\n"
    )
    env = {**os.environ, "AUGLOOP_DATA_DIR": str(tmp_path), "AUGLOOP_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
