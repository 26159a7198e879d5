"""The layers of the package are enforced by import-linter's contracts in pyproject.toml
(`lint-imports`, run by scripts/test): here, that those contracts hold and that they catch
an import running the wrong way."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package, the examples and the contracts, to break on purpose."""
    for name in ("extauthz_server", "examples"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")


def test_the_package_keeps_every_contract(tree: Path) -> None:
    result = _lint_imports(tree)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("core/paths.py", "import grpc", "extauthz_server.core is not allowed to import grpc"),
        (
            "core/policy.py",
            "import aiohttp",
            "extauthz_server.core is not allowed to import aiohttp",
        ),
        (
            "core/tokens.py",
            "from extauthz_server.cache import resolver",
            "extauthz_server.core is not allowed to import extauthz_server.cache",
        ),
        (
            "identity/jwks.py",
            "from extauthz_server.edges import http_app",
            "extauthz_server.identity is not allowed to import extauthz_server.edges",
        ),
        (
            "metadata/enrichment.py",
            "from extauthz_server.revocation import endpoint",
            "extauthz_server.metadata is not allowed to import extauthz_server.revocation",
        ),
        (
            "ops/metrics.py",
            "from extauthz_server._proto.google.rpc import status_pb2",
            "extauthz_server.ops is not allowed to import extauthz_server._proto",
        ),
        (
            "../examples/api_key_strategy.py",
            "from extauthz_server.core import identity",
            "examples is not allowed to import extauthz_server.core",
        ),
    ],
    ids=[
        "core-grpc",
        "core-aiohttp",
        "core-cache",
        "identity-edges",
        "sideways",
        "ops-proto",
        "example-internals",
    ],
)
def test_an_import_running_the_wrong_way_breaks_a_contract(
    tree: Path, module: str, line: str, broken: str
) -> None:
    _append(tree / "extauthz_server" / module, line)

    result = _lint_imports(tree)

    assert result.returncode != 0
    assert broken in result.stdout


def test_the_readme_layout_tree_lists_exactly_the_package_entries() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout\n", 1)[1].split("```\nextauthz_server/\n", 1)[1]
    listed: set[str] = set()
    for line in block.split("```", 1)[0].splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            names = line.strip().split("  ", 1)[0]
            listed.update(names.split())
    package = ROOT / "extauthz_server"
    present = {
        entry.name + ("/" if entry.is_dir() else "")
        for entry in package.iterdir()
        if entry.name not in ("__init__.py", "__pycache__")
    }

    assert listed == present
