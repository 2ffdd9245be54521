"""The lock files cover pyproject.toml: a dependency added without `make lock` fails here, not on a fresh
machine (where `make install` installs only what requirements-dev.lock names)."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement

from shared.settings import REPO_ROOT


def _pins(name: str) -> dict[str, str]:
    text = (REPO_ROOT / name).read_text()
    header = "".join(text.splitlines(True)[:5])
    assert header.startswith(f"# {name}:")
    assert "make lock" in header, "the header says how to regenerate it"
    return {
        _normal(m["name"]): m["version"]
        for m in re.finditer(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+) \\$", text, re.MULTILINE)
    }


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extra: str | None) -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    found = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    declared = {}
    for line in found:
        requirement = Requirement(line)
        [spec] = list(requirement.specifier)
        assert spec.operator == "==", f"{line}: pin it exactly"
        declared[_normal(requirement.name)] = spec.version
    return declared


def test_every_declared_package_is_locked_at_its_pinned_version() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    for name, version in _declared(None).items():
        assert runtime.get(name) == version, f"{name}=={version}: run `make lock`"
    for name, version in _declared("dev").items():
        assert dev.get(name) == version, f"{name}=={version}: run `make lock`"


def test_the_runtime_lock_is_the_dev_locks_versions_without_the_dev_tools() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime
    # Development-only packages stay out of the image.
    for tool in ("aiosmtpd", "pytest", "uv", "mypy", "ruff"):
        assert tool not in runtime
        assert tool in dev
