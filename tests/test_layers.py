"""The layers hold: no service imports another (each runs and scales on its own, and talks
to the others through the database and the queues), and shared/ imports no service. Every
import is read, those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" else None


def crossings(package: Path, own: str | None) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        for line, module in imported_modules(path):
            other = service_of(module)
            if other is not None and other in SERVICES and other != own:
                bad.append(f"{path.relative_to(package.parent)}:{line} imports services.{other}")
    return sorted(set(bad))


def test_there_are_services_to_check() -> None:
    assert {"api", "issuer", "distributor", "expiry_watcher", "cli"} <= set(SERVICES)


def test_no_service_imports_another() -> None:
    bad = [c for service in SERVICES for c in crossings(ROOT / "services" / service, service)]
    assert bad == []


def test_shared_imports_no_service() -> None:
    assert crossings(ROOT / "shared", None) == []


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    """The reader finds imports at module level and inside functions, in both spellings."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(
        "import services.issuer.service\n"
        "def f():\n    from services.distributor import targets\n"
        "from services import expiry_watcher\n"
    )
    found = crossings(package, "api")
    assert len(found) == 3, found
