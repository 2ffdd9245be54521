"""A package runs its mypyc-compiled modules only when the build holds them built from the current sources of
their service and shared/, with every other package's of the build (shared/compiled.py), and `make install`
builds the segmenter's rules, write set and event decoding, and ingest's Segment reader and mapping and
Shopify reader, so that they do."""

from __future__ import annotations

import ast
import gc
import importlib
import json
import shutil
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import msgspec
import pytest

import services.ingest.sources as ingest_sources
import services.segmenter.domain as domain
from services.ingest.sources import segment, segment_reader, shopify_reader, shopify_structs
from services.segmenter.adapters import event_decoding
from services.segmenter.domain import funnel, identity
from services.segmenter.domain.records import Record
from services.segmenter.service_layer import write_set
from shared.compiled import (
    BUILD_DIR,
    COMPILED,
    COMPILED_IN_USE,
    MANIFEST,
    REPO_ROOT,
    build,
    compiled_now,
    inputs,
    runs_compiled,
    use_compiled,
)

PACKAGE = "services.segmenter.domain"
PACKAGE_DIR = ("services", "segmenter", "domain")
SERVICE_DIR = PACKAGE_DIR[:-1]
WRITE_SET = "services.segmenter.service_layer"
DECODING = "services.segmenter.adapters"
INGEST = "services.ingest.sources"
INGEST_DIR = ("services", "ingest")


@pytest.fixture(autouse=True)
def _sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the sources the compiled modules depend on, to edit."""
    copy = tmp_path / "repo"
    for sources in (("shared",), SERVICE_DIR, INGEST_DIR):
        shutil.copytree(
            REPO_ROOT.joinpath(*sources),
            copy.joinpath(*sources),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return copy


def _built(root: Path, build_dir: Path, *, left_out: str | None = None) -> Path:
    """A build of the sources under `root` as they are now: the manifest and an (empty) extension for each
    module of every package in COMPILED, but `left_out` ("package.module")."""
    for package, modules in COMPILED.items():
        compiled_dir = build_dir.joinpath(*package.split("."))
        compiled_dir.mkdir(parents=True)
        for module in modules:
            if f"{package}.{module}" != left_out:
                (compiled_dir / f"{module}{EXTENSION_SUFFIXES[0]}").touch()
    (build_dir / MANIFEST).write_text(json.dumps({p: inputs(p, root) for p in COMPILED}))
    return build_dir


def test_a_build_of_the_current_sources_comes_first_on_the_package_path(root: Path, tmp_path: Path) -> None:
    build_dir = _built(root, tmp_path / "mypyc")
    sources = str(root.joinpath(*PACKAGE_DIR))
    path = [sources]
    # What a process started now would do (the benchmark records it), asked without changing anything.
    assert runs_compiled(PACKAGE, build_dir, root)
    assert str(build_dir) not in sys.path
    assert use_compiled(PACKAGE, path, build_dir, root)
    assert path == [str(build_dir.joinpath(*PACKAGE_DIR)), sources]
    assert str(build_dir) in sys.path  # the modules' shared runtime library
    assert COMPILED_IN_USE.labels(PACKAGE)._value.get() == 1


@pytest.mark.parametrize(
    "edited",
    [
        "services/segmenter/domain/carts.py",
        "services/segmenter/service_layer/write_set.py",
        "services/segmenter/adapters/repository.py",
        "shared/funnel.py",
        # Another service's compiled module: the build is one library, used whole or not at all.
        "services/ingest/sources/segment.py",
    ],
)
def test_a_source_edited_since_the_build_runs_the_whole_package_interpreted(
    root: Path, tmp_path: Path, edited: str
) -> None:
    # A compiled module of the package or of another package of the build, a module of the service that
    # the write set calls, or one of shared/: compiled code calls each with the types it saw then.
    build_dir = _built(root, tmp_path / "mypyc")
    with (root / edited).open("a") as f:
        f.write("# edited\n")
    assert not runs_compiled(PACKAGE, build_dir, root)
    assert not runs_compiled(WRITE_SET, build_dir, root)
    assert not runs_compiled(INGEST, build_dir, root)
    path = [str(root.joinpath(*PACKAGE_DIR))]
    assert not use_compiled(PACKAGE, path, build_dir, root)
    assert path == [str(root.joinpath(*PACKAGE_DIR))]
    assert str(build_dir) not in sys.path
    assert COMPILED_IN_USE.labels(PACKAGE)._value.get() == 0


@pytest.mark.parametrize(
    "left_out", [f"{PACKAGE}.{COMPILED[PACKAGE][0]}", f"{WRITE_SET}.write_set", f"{INGEST}.segment"]
)
def test_a_module_not_built_for_this_interpreter_runs_the_whole_package_interpreted(
    root: Path, tmp_path: Path, left_out: str
) -> None:
    # One of the package's own modules missing, or another package's: the build is used whole or not at all.
    build_dir = _built(root, tmp_path / "mypyc", left_out=left_out)
    assert not runs_compiled(WRITE_SET, build_dir, root)
    path = [str(root.joinpath(*PACKAGE_DIR))]
    assert not use_compiled(PACKAGE, path, build_dir, root)
    assert len(path) == 1


@pytest.mark.parametrize("manifest", [None, "not json", "[1, 2]", "{}"])
def test_no_build_or_an_unreadable_manifest_runs_interpreted(
    root: Path, tmp_path: Path, manifest: str | None
) -> None:
    if manifest is not None:
        (tmp_path / MANIFEST).write_text(manifest)
    path = [str(root.joinpath(*PACKAGE_DIR))]
    assert not use_compiled(PACKAGE, path, tmp_path, root)
    assert len(path) == 1


def test_a_package_with_nothing_compiled_is_left_as_it_is(root: Path, tmp_path: Path) -> None:
    build_dir = _built(root, tmp_path / "mypyc")
    path = [str(root / "services" / "notifier" / "domain")]
    assert not use_compiled("services.notifier.domain", path, build_dir, root)
    assert len(path) == 1


def test_a_build_of_the_current_sources_is_not_compiled_again(root: Path, tmp_path: Path) -> None:
    # `make install` runs the build every time and relies on this to be quick when nothing changed.
    build_dir = _built(root, tmp_path / "mypyc")
    manifest = (build_dir / MANIFEST).read_text()
    assert build(build_dir, root) is False
    assert (build_dir / MANIFEST).read_text() == manifest


def test_after_make_install_the_segmenter_rules_and_ingest_mapping_run_compiled() -> None:
    # `make test` runs `make install`, which builds them; an edit since (a stale build) or a machine
    # without a C compiler would run them interpreted, and this says so.
    manifest = json.loads((BUILD_DIR / MANIFEST).read_text())
    assert manifest[PACKAGE] == inputs(PACKAGE), "no build of the current sources: run `make install`"
    assert domain.__path__[0] == str(BUILD_DIR.joinpath(*PACKAGE_DIR))
    assert Path(funnel.__file__).is_relative_to(BUILD_DIR)
    assert Path(funnel.__file__).suffix == ".so"
    assert Path(write_set.__file__).suffix == ".so"
    assert Path(event_decoding.__file__).suffix == ".so"
    assert ingest_sources.__path__[0] == str(BUILD_DIR.joinpath(*INGEST_DIR, "sources"))
    assert Path(segment.__file__).suffix == ".so"
    assert Path(segment_reader.__file__).suffix == ".so"
    assert Path(shopify_reader.__file__).suffix == ".so"
    assert compiled_now() == {PACKAGE: True, WRITE_SET: True, DECODING: True, INGEST: True}
    # What ingest's /metrics says (the gauge is set as its package is imported).
    assert COMPILED_IN_USE.labels(INGEST)._value.get() == 1


def _structs_of_compiled_modules() -> list[type[msgspec.Struct]]:
    # Every package's: a Struct a compiled module defines is compiled with it, whichever service it serves.
    modules = [
        importlib.import_module(f"{package}.{name}") for package, names in COMPILED.items() for name in names
    ]
    return [
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == module.__name__
    ]


def test_the_compiled_modules_structs_are_frozen_and_untracked_as_written() -> None:
    # mypyc drops a class statement's keywords (`frozen=True, gc=False`) when it builds a class whose
    # metaclass is not its own: a Struct written frozen came out mutable and tracked by the garbage collector
    # once compiled. They take both from an interpreted base instead (domain/records.py).
    structs = _structs_of_compiled_modules()
    assert {cls.__name__ for cls in structs} >= {"Resolution", "HealthHistory"}
    for cls in structs:
        assert issubclass(cls, Record), cls
        assert cls.__struct_config__.frozen, cls
        assert not cls.__struct_config__.gc, cls
    resolution = identity.resolve(["id:1"], {})
    assert Path(identity.__file__).suffix == ".so"  # the compiled class, which lost the keywords before
    with pytest.raises(AttributeError):
        resolution.customer_id = "someone else"  # type: ignore[misc]
    assert not gc.is_tracked(resolution)
    assert hash(resolution) == hash(identity.Resolution(customer_id="1", absorbed=()))


def _handlers_binding_two_types(tree: ast.Module) -> list[str]:
    """`function: name` for each function that binds one name to two exception types in its handlers."""
    found = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            types: dict[str, set[str]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    types.setdefault(node.name, set()).add(ast.unparse(node.type))
            found += [f"{function.name}: {name}" for name, seen in types.items() if len(seen) > 1]
    return found


def test_no_compiled_function_binds_one_name_to_two_exception_types() -> None:
    # mypy accepts `except A as exc` and later `except B as exc` in one function; mypyc gives the variable
    # one type, its first, so once compiled the second handler raises TypeError (ingest's batch mapping
    # answered a bad call with a 500 that way before its first build was tested).
    sources = [
        REPO_ROOT.joinpath(*package.split("."), f"{module}.py")
        for package, modules in COMPILED.items()
        for module in modules
    ]
    assert _handlers_binding_two_types(
        ast.parse("def f():\n    try: g()\n    except A as e: h(e)\n    try: g()\n    except B as e: h(e)\n")
    ) == ["f: e"]
    for source in sources:
        assert _handlers_binding_two_types(ast.parse(source.read_text())) == [], source


def test_the_compiled_shopify_reader_decodes_bodies_by_structs_left_interpreted() -> None:
    # msgspec decodes by a Struct's annotations, and a compiled class keeps them only in part: these Structs
    # compiled (tried with mypyc) had every field's annotation `type`, and every body failed to decode (each
    # webhook then parsed and mapped the slow way, by the pydantic models).
    assert Path(shopify_reader.__file__).suffix == ".so"
    assert Path(shopify_structs.__file__).suffix == ".py"
    order = shopify_structs.DECODERS["orders/create"].decode(
        b'{"id": 1, "customer": {"id": 2, "unread": [3]}, "line_items": [{"id": 4, "price": "1.00"}]}'
    )
    assert msgspec.to_builtins(order) == {
        "id": 1,
        "customer": {"id": 2},
        "line_items": [{"id": 4, "price": "1.00"}],
    }
    with pytest.raises(msgspec.ValidationError, match=r"\$\.customer"):
        shopify_structs.DECODERS["orders/create"].decode(b'{"customer": 5}')


def test_a_build_leaves_no_extension_of_a_module_it_no_longer_compiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A build from an older commit, which compiled fewer modules, left a newer commit's extensions in
    # place: first on the package's path, they ran instead of the sources (and failed to import theirs).
    # A real build (mypyc and gcc) of a one-module package, twice.
    root = tmp_path / "repo"
    package_dir = root / "services" / "tiny" / "rules"
    package_dir.mkdir(parents=True)
    (root / "shared").mkdir()
    for package in (root / "services", root / "services" / "tiny", package_dir):
        (package / "__init__.py").touch()
    (package_dir / "first.py").write_text("def f(n: int) -> int:\n    return n + 1\n")
    (package_dir / "second.py").write_text("def g(n: int) -> int:\n    return n * 2\n")
    build_dir = tmp_path / "build" / "mypyc"
    monkeypatch.chdir(tmp_path)  # mypy's cache
    monkeypatch.setattr("shared.compiled.COMPILED", {"services.tiny.rules": ("first",)})
    assert build(build_dir, root)
    built = build_dir / "services" / "tiny" / "rules"
    assert (built / f"first{EXTENSION_SUFFIXES[0]}").is_file()

    monkeypatch.setattr("shared.compiled.COMPILED", {"services.tiny.rules": ("second",)})
    assert build(build_dir, root)
    assert (built / f"second{EXTENSION_SUFFIXES[0]}").is_file()
    assert not list(built.glob("first*")), "the first build's extension is still there"
    assert runs_compiled("services.tiny.rules", build_dir, root)
