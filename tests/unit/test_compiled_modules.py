"""A package runs its mypyc-compiled modules only when they were built from its current sources
(shared/compiled.py), and `make install` builds the segmenter's rules so that they do."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import services.segmenter.domain as domain
from services.segmenter.domain import funnel
from shared import compiled
from shared.compiled import BUILD_DIR, COMPILED, COMPILED_IN_USE, MANIFEST, use_compiled

PACKAGE = "services.segmenter.domain"
SOURCES = Path(domain.__file__).parent


def _built(build_dir: Path, digests: dict[str, str]) -> Path:
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / MANIFEST).write_text(json.dumps(digests))
    return build_dir


def _current() -> dict[str, str]:
    return {f"{PACKAGE}.{module}": compiled._digest(SOURCES / f"{module}.py") for module in COMPILED[PACKAGE]}


@pytest.fixture(autouse=True)
def _sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_a_build_of_the_current_sources_comes_first_on_the_package_path(tmp_path: Path) -> None:
    build_dir = _built(tmp_path / "mypyc", _current())
    path = [str(SOURCES)]
    assert use_compiled(PACKAGE, path, build_dir)
    assert path == [str(build_dir / "services" / "segmenter" / "domain"), str(SOURCES)]
    assert str(build_dir) in sys.path  # the modules' shared runtime library
    assert COMPILED_IN_USE.labels(PACKAGE)._value.get() == 1


def test_one_source_edited_since_the_build_runs_the_whole_package_interpreted(tmp_path: Path) -> None:
    digests = _current()
    digests[f"{PACKAGE}.funnel"] = "0" * 64
    build_dir = _built(tmp_path / "mypyc", digests)
    path = [str(SOURCES)]
    assert not use_compiled(PACKAGE, path, build_dir)
    assert path == [str(SOURCES)]
    assert str(build_dir) not in sys.path
    assert COMPILED_IN_USE.labels(PACKAGE)._value.get() == 0


@pytest.mark.parametrize("manifest", [None, "not json", "[1, 2]"])
def test_no_build_or_an_unreadable_manifest_runs_interpreted(tmp_path: Path, manifest: str | None) -> None:
    if manifest is not None:
        (tmp_path / MANIFEST).write_text(manifest)
    path = [str(SOURCES)]
    assert not use_compiled(PACKAGE, path, tmp_path)
    assert path == [str(SOURCES)]


def test_a_package_with_nothing_compiled_is_left_as_it_is(tmp_path: Path) -> None:
    build_dir = _built(tmp_path / "mypyc", _current())
    path = [str(SOURCES)]
    assert not use_compiled("services.notifier.domain", path, build_dir)
    assert path == [str(SOURCES)]


def test_after_make_install_the_segmenter_rules_run_compiled() -> None:
    # `make test` runs `make install`, which builds them; an edit since (a stale build) or a machine
    # without a C compiler would run them interpreted, and this says so.
    assert compiled._manifest(BUILD_DIR) == _current(), "no build of the current sources: run `make install`"
    assert domain.__path__[0] == str(BUILD_DIR / "services" / "segmenter" / "domain")
    assert Path(funnel.__file__).is_relative_to(BUILD_DIR)
    assert Path(funnel.__file__).suffix == ".so"
