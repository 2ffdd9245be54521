"""Hot, typed pure-Python modules compiled to C extensions by mypyc, used only when built from exactly the
sources beside them.

The segmenter's decisions (services/segmenter/domain) are typed Python run once or more per event: in
process, over the benchmark's replay mix, they were about a quarter of the segmenter's CPU. mypyc (mypy's
own compiler, which mypy and black ship their wheels with) compiles the same modules to C extensions:
client CPU 63.8 -> 56.1 us an event with the service's garbage-collector settings (medians of 4
alternated pairs), the same stored state byte for byte (replay check) and the same unit tests passing. The
code stays Python; nothing is written for the compiler.

The service layer's per-event work is compiled too (services/segmenter/service_layer): a batch's loop over
its events (resolution, merges, the rules' calls: deciding.py) and its record of each decision (the write
set), which calls the rules and the write set natively. Over the replay mix in process (decoding, keys,
decisions, rows; alternated runs), the decisions' part 21.3 -> 18.9 us an event; in the stack, alternated
single runs of the segmenter phase, its CPU an event 52.9 -> 49.5 us at the medians (bench/README.md,
forty-second round). So is the decoding of every event it reads
(services/segmenter/adapters/event_decoding.py: about 1,800 instructions an event fewer over the replay,
fifty-second round); the adapters' other modules wait for the database and stay interpreted.

Ingest's reading and mapping of Segment calls is compiled too (services/ingest/sources: segment_reader.py,
which checks each field of a call as the models would, and segment.py, which maps the calls to canonical
events): 57 % of ingest's CPU at saturation on Segment batches (py-spy). Over the benchmark's batch bodies in
process (parsing, checking and mapping 100 calls a batch, written to their Kafka bytes), 23 -> 15 us a call.
So is the Shopify webhooks' hand reader (shopify_reader.py: checking an order's, a checkout's, a refund's or a
customer's fields and building the canonical event): a fifth fewer instructions in a webhook's mapping from
its bytes (callgrind, over the benchmark's webhook bodies). Its Structs, which msgspec decodes a raw body into
by their annotations (see profile.py below), are a module of their own, interpreted (shopify_structs.py). Left
interpreted there: segment_records.py, whose msgspec Structs take class keyword arguments (`kw_only=True,
omit_defaults=True`), the WooCommerce mapping, and the routes.

`make install` (and the Docker image's build stage) compile the modules listed in COMPILED, in one build,
into .build/mypyc/ with a manifest of the SHA-256 of every source they were compiled against: every module
of their service and shared/'s, the code of ours they import (mypyc compiles a call or an attribute read
for the types it saw then). A package puts that directory first on its `__path__` (`use_compiled`, called
by its `__init__`) only if each of those files is still the one built and each module of the build has
its extension there for this interpreter: an edit since, a build from another commit or for another
Python, and every package runs interpreted (all or none, across packages too: compiled modules call each
other natively, inside the build's one library), so a stale build never runs. Without a build (no C
compiler, `.build/` removed) everything runs interpreted, as before.

Left interpreted: services/segmenter/domain/profile.py, whose msgspec Structs take class keyword
arguments (`frozen=True, kw_only=True`) that a compiled class definition drops (domain/records.py), and
whose field annotations, which msgspec decodes the stored documents by, a compiled class keeps only in
part (`tuple[OrderFact, ...]` becomes `tuple`, `str | None` `type`; what its Structs' methods compute from
their facts, the figures and the funnel events' snapshot, is in domain/figures.py, compiled); the
processor and the rest of the service, which tests patch and which mostly wait for I/O.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import MutableSequence
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from prometheus_client import Gauge

# Package -> its modules compiled (their sources are <package dir>/<module>.py).
COMPILED: dict[str, tuple[str, ...]] = {
    "services.segmenter.domain": (
        "browsing", "carts", "event_classes", "event_ids", "figures", "funnel", "health", "history",
        "identity", "instants", "stages", "struct_functions", "survey", "vocabulary",
    ),
    "services.segmenter.service_layer": ("deciding", "write_set"),
    "services.segmenter.adapters": ("event_decoding",),
    "services.ingest.sources": ("segment_reader", "segment", "shopify_reader"),
}  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / ".build" / "mypyc"
MANIFEST = "SOURCES.json"

COMPILED_IN_USE = Gauge(
    "compiled_modules_in_use",
    "1 when the package runs its mypyc-compiled modules (built from its current sources), else 0",
    ["package"],
)


def _relative(package: str) -> Path:
    """The package's directory, from the repository's root (or a build's)."""
    return Path(*package.split("."))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs(package: str, root: Path = REPO_ROOT) -> dict[str, str]:
    """The SHA-256 of every source the package's compiled modules depend on, by path from `root`: every
    module of its service (the package's parent: services/segmenter for its domain) and shared/'s."""
    service = root / _relative(package).parent
    files = [*(root / "shared").glob("*.py"), *service.rglob("*.py")]
    return {path.relative_to(root).as_posix(): _digest(path) for path in sorted(files)}


def _manifest(build_dir: Path) -> dict[str, object]:
    try:
        recorded = json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _current(package: str, manifest: dict[str, object], build_dir: Path, sources: dict[str, str]) -> bool:
    """Whether `build_dir` holds the package's modules built from `sources` (its `inputs` now), each one's
    extension for this interpreter."""
    modules = COMPILED.get(package, ())
    compiled_dir = build_dir / _relative(package)
    return (
        bool(modules)
        and manifest.get(package) == sources
        # The first suffix is this interpreter's own (`.cpython-311-x86_64-linux-gnu.so`).
        and all((compiled_dir / f"{module}{EXTENSION_SUFFIXES[0]}").is_file() for module in modules)
    )


def runs_compiled(package: str, build_dir: Path = BUILD_DIR, root: Path = REPO_ROOT) -> bool:
    """Whether a process started now would run the package's compiled modules: `build_dir` holds a build of
    the sources now under `root` for this interpreter, of this package and of every other in COMPILED
    (one build: a compiled module calls another package's natively). The benchmark records it, since a
    figure measured with the rules interpreted (an edit of shared/ since the last `make install` is
    enough) is not the service's."""
    manifest = _manifest(build_dir)
    # The packages of one service have the same inputs: each service's sources are hashed once.
    by_service: dict[Path, dict[str, str]] = {}
    for built in COMPILED:
        service = _relative(built).parent
        if service not in by_service:
            by_service[service] = inputs(built, root)
    return package in COMPILED and all(
        _current(built, manifest, build_dir, by_service[_relative(built).parent]) for built in COMPILED
    )


def compiled_now() -> dict[str, bool]:
    """`runs_compiled` of every package that has compiled modules."""
    return {package: runs_compiled(package) for package in COMPILED}


def use_compiled(
    package: str, path: MutableSequence[str], build_dir: Path = BUILD_DIR, root: Path = REPO_ROOT
) -> bool:
    """Put the package's compiled modules first on its `__path__` when they were built from the sources
    now under `root` for this interpreter; leave it as it is otherwise. Whether they are used."""
    compiled_dir = build_dir / _relative(package)
    in_use = runs_compiled(package, build_dir, root)
    if in_use:
        # The compiled modules share one runtime library, a top-level module at the build's root.
        if str(build_dir) not in sys.path:
            sys.path.append(str(build_dir))
        path.insert(0, str(compiled_dir))
    COMPILED_IN_USE.labels(package).set(1 if in_use else 0)
    return in_use


def build(build_dir: Path = BUILD_DIR, root: Path = REPO_ROOT) -> bool:
    """Compile every module of COMPILED into `build_dir` and record the sources it was built from, unless
    the build there is of the current sources already (what `use_compiled` checks: so `make install` needs
    no list of its own of what the build depends on). Whether it compiled."""
    manifest = _manifest(build_dir)
    before = {package: inputs(package, root) for package in COMPILED}
    if all(_current(package, manifest, build_dir, before[package]) for package in COMPILED):
        print(f"compiled modules in {build_dir} are up to date")
        return False
    # Build-time tools only (mypy is a dev dependency): the services never import them.
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped,unused-ignore]

    # No file of an earlier build kept: an extension of a module no longer in COMPILED (after a checkout of
    # an older commit) would come first on its package's path and run instead of its source. The directories
    # stay (setuptools remembers, within a process, the ones it made).
    for stale in build_dir.rglob("*"):
        if stale.is_file():
            stale.unlink()
    sources = [
        str(_relative(package) / f"{module}.py")
        for package, modules in COMPILED.items()
        for module in modules
    ]
    with contextlib.chdir(root):  # mypyc names each module after its path from here
        setup(
            name="loyalty-funnel-compiled",
            ext_modules=mypycify(sources, target_dir=str(build_dir.parent / "c")),
            script_args=["--quiet", "build_ext", "--build-lib", str(build_dir), "--build-temp",
                         str(build_dir.parent / "temp")],
        )  # fmt: skip
    if {package: inputs(package, root) for package in COMPILED} != before:
        raise RuntimeError("a source changed during the build: run it again")
    (build_dir / MANIFEST).write_text(json.dumps(before, indent=1, sort_keys=True) + "\n")
    print(f"compiled {len(sources)} modules into {build_dir}")
    return True


if __name__ == "__main__":
    build()
