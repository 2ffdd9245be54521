"""Rendering messages from Liquid templates: templates/<flow>/<locale>/{subject,text,html}.liquid.

Each store may name a directory of its own templates in the registry (`templates_dir`); every file there
replaces the built-in file of the same name, and every file it does not have falls back to the built-in one.
All files are read into memory when the catalogue is built and validated before it is used: parsed (a syntax
error names the file and line), analysed (a variable the flow does not hand over is an error, not a blank in a
customer's inbox) and rendered once with sample data. Templates see only the flow's data and can include only
files of their own set: no paths outside it, no file system, no network, bounded loops and output, and no
value bigger than an email nor a render of more than a second of CPU (template_limits.py).

The HTML part is autoescaped (customer names come from storefront input) and its CSS is inlined by css-inline
at render time, so mail clients that drop <style> (Gmail's app, Outlook) still show the layout; subject and
text are plain. A locale without templates falls back to its language, the store's language, then English.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any, TextIO

import css_inline
from liquid import BoundTemplate, Environment, FalsyStrictUndefined, RenderContext
from liquid.ast import Node
from liquid.exceptions import LiquidError, TemplateNotFoundError
from liquid.loader import BaseLoader, TemplateSource

from services.notifier.adapters.template_limits import (
    MAX_ITEMS,
    MAX_TEXT,
    BoundedContext,
    RenderTimeLimitError,
    TemplateValueError,
    bound_ranges,
    bounded,
)
from shared.stores import StoreConfig

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
DEFAULT_LOCALE = "en"
PARTS = ("subject", "text", "html")
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")
_SPACES = re.compile(r"[ \t\r\n]+")
_LOCALE_DIR = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
# A store's directory is content, not code: these keep a broken or hostile one from hurting the sender.
MAX_TEMPLATE_BYTES = 256 * 1024
MAX_TEMPLATES = 2000
_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


class TemplateProblem(ValueError):
    """Templates that must not be used, each problem naming its file (and line when known)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class _PartialTemplate(BoundTemplate):
    """A template that, included by another, writes again the text it wrote for the same values.

    python-liquid renders an include node by node every time: `_partials/html_top.liquid`, the same for every
    message of a store and locale, took ~120 us a message. A template whose output can depend on nothing but
    the values of the variables it reads (its only tags test and print: no assign, capture, cycle,
    increment, loops or includes; no `date` filter, which can read the clock) keeps its output per distinct
    set of those values, when each is plain (a string, number, bool or None; markup and text apart): at most
    _KEPT sets, so one that reads a customer's name keeps a few and renders the rest as before. Its variables
    are looked up where its nodes would look them up (the including template's scope), so a variable the
    includer assigned, or one that is undefined (not plain: rendered, and raising, as before), is covered.

    Once its outputs are full, the next _JUDGED lookups say whether keeping is worth its lookups: one that
    found fewer than a quarter of them reads something each customer has their own of (the greeting's first
    name, a coupon code, an unsubscribe link) and is rendered as before from then on, without looking up its
    values first (looking values up was 1.4-2.9 % of the notifier's busy samples at 1,000 events/s, and for
    a first name all of it finds nothing; rendering 922 -> 860 us a message in process)."""

    context_class = BoundedContext  # each render's deadline (template_limits.py)
    _KEPT = 32
    _JUDGED = 256
    _PURE_TAGS = frozenset({"if", "unless", "case", "comment", "raw"})
    _PLAIN = (str, int, float, bool, Decimal, type(None))  # markup is a str, told apart by its type

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reads: list[list[str]] | None = None  # the variables' paths; None until known
        self._pure = True
        self._outputs: dict[tuple[object, ...], str] = {}
        self._keeping = True
        self._judged = 0  # lookups since the outputs were full, up to _JUDGED
        self._found = 0

    def render(self, *args: Any, **kwargs: Any) -> str:
        try:
            return super().render(*args, **kwargs)
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # python-liquid's own tags can fail so on odd values (`{% for x in xs limit: -1 offset: -1 %}`
            # raises islice's ValueError): the template's problem, told as one, not an exception that the
            # validation, the preview API and the sender never expected.
            raise TemplateValueError(f"{type(exc).__name__}: {exc}", token=None) from exc

    def render_with_context(
        self,
        context: RenderContext,
        buffer: TextIO,
        *args: Any,
        partial: bool = False,
        block_scope: bool = False,
        **kwargs: Any,
    ) -> None:
        key = self._key(context) if self._keeping and partial and not args and not kwargs else None
        if key is None:
            super().render_with_context(
                context, buffer, *args, partial=partial, block_scope=block_scope, **kwargs
            )
            return
        text = self._outputs.get(key)
        if self._judged < self._JUDGED and len(self._outputs) >= self._KEPT:
            self._judged += 1
            self._found += text is not None
            if self._judged == self._JUDGED and self._found * 4 < self._JUDGED:
                self._keeping = False
                self._outputs.clear()
        if text is None:
            written = StringIO()
            super().render_with_context(context, written, partial=partial, block_scope=block_scope)
            text = written.getvalue()
            if len(self._outputs) < self._KEPT:
                self._outputs[key] = text
        buffer.write(text)

    def _key(self, context: RenderContext) -> tuple[object, ...] | None:
        if self._reads is None:
            self._reads = self._paths()
        if not self._pure:
            return None
        key: list[object] = []
        for path in self._reads:
            value = context.get(list(path), token=None, default=_NOT_PLAIN)
            if not isinstance(value, self._PLAIN):
                return None
            key += (type(value), value)
        return tuple(key)

    def _paths(self) -> list[list[str]]:
        found = self.analyze(include_partials=False)
        paths: set[tuple[str, ...]] = set()
        for variables in found.variables.values():
            for variable in variables:
                segments = variable.segments if isinstance(variable.segments, list) else [variable.segments]
                names = [s for s in segments if isinstance(s, str)]
                if len(names) != len(segments) or not names or names[0] == "partial":
                    self._pure = False  # an index or a lookup by variable, or the include's own flag
                    return []
                paths.add(tuple(names))
        self._pure = not found.locals and set(found.tags) <= self._PURE_TAGS and "date" not in found.filters
        return [list(p) for p in sorted(paths)] if self._pure else []


_NOT_PLAIN = object()


class _Environment(Environment):
    # A store's template may loop, nest and hold only so much: a typo must not stall the sender, nor exhaust
    # the memory every store's email shares. What it writes is capped by the output limit, what it keeps in
    # variables by the namespace one (`assign`, `capture`): without it, a string doubled in a loop of 30
    # reached gigabytes before anything was written (python-liquid measures the namespace with
    # sys.getsizeof, so a string counts its length).
    context_depth_limit = 30
    loop_iteration_limit = MAX_ITEMS
    output_stream_limit = MAX_TEXT
    local_namespace_limit = 512 * 1024
    template_class = _PartialTemplate

    # What a filter makes and a range holds, and how long a render runs, are bounded in template_limits.py.
    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.filters = {name: bounded(name, func) for name, func in self.filters.items()}

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        super().add_filter(name, bounded(name, func))

    def _parse(self, source: str) -> list[Node]:
        nodes = super()._parse(source)
        bound_ranges(self, nodes)
        return nodes


class _SnapshotLoader(BaseLoader):
    """Templates from a dict read once at load time: a name is found only if it is one of the set's files,
    so `..`, absolute paths and symlinks lead nowhere, and edits on disk change nothing until a reload."""

    def __init__(self, sources: Mapping[str, str], origins: Mapping[str, str]) -> None:
        super().__init__()
        self._sources = sources
        self._origins = origins
        # Parsed once per environment: the snapshot never changes, and partials are included everywhere.
        self._parsed: dict[tuple[int, str], BoundTemplate] = {}
        self.loaded: set[str] | None = None  # while the validation records what a template reads

    def get_source(
        self,
        env: Environment,
        template_name: str,
        *,
        context: RenderContext | None = None,
        **kwargs: object,
    ) -> TemplateSource:
        name = _name(template_name)
        if name not in self._sources:
            raise TemplateNotFoundError(template_name)
        return TemplateSource(self._sources[name], name, None)

    def load(
        self,
        env: Environment,
        name: str,
        *,
        globals: Mapping[str, object] | None = None,
        context: RenderContext | None = None,
        **kwargs: object,
    ) -> BoundTemplate:
        key = (id(env), _name(name))
        if self.loaded is not None:
            self.loaded.add(key[1])
        found = self._parsed.get(key)
        if found is None or globals:
            source = self.get_source(env, name, context=context)
            # Named by where the file came from: errors say "shop/welcome/de/html.liquid", not "html.liquid".
            origin = self._origins[source.name]
            found = env.from_string(source.text, name=origin, path=origin, globals=globals)
            if not globals:
                self._parsed[key] = found
        return found


def _name(template_name: str) -> str:
    return template_name if template_name.endswith(".liquid") else f"{template_name}.liquid"


class TemplateSet:
    """One store's templates (or the built-ins alone), parsed and ready to render.

    A store's set is the built-in one with the store's own files in place of some: each of its templates
    that reads none of those files (neither itself nor any partial it includes) renders as the built-in one
    does, so it is the built-in one, validated, parsed and kept once for every store. A store that only
    changes its language, or one greeting, costs a start, a reload and memory next to nothing; validating
    and parsing every store's whole set took 0.25 s of CPU and 2.7 MiB a store (`check-templates` of 1,000
    stores: 233 s and 2.2 GB). The built-ins include partials by literal names only, so the files the
    validation's render loaded are all that any render of them loads."""

    def __init__(
        self,
        sources: Mapping[str, str],
        origins: Mapping[str, str],
        default_locale: str,
        *,
        base: TemplateSet | None = None,
        own: Iterable[str] = (),
    ) -> None:
        self.sources = dict(sources)
        self.origins = dict(origins)
        self.default_locale = default_locale
        self._base = base
        self._own = frozenset(own)
        # Each template's name → every file its validation loaded (itself and its partials).
        self.reads: dict[str, frozenset[str]] = {}
        self._loader = loader = _SnapshotLoader(self.sources, origins)
        # Falsy-strict: `{% if x %}` works on absent data, but printing a misspelt variable fails loudly.
        self._plain = _Environment(loader=loader, undefined=FalsyStrictUndefined)
        self._html = _Environment(loader=loader, undefined=FalsyStrictUndefined, autoescape=True)
        self._templates: dict[str, BoundTemplate] = {}
        self._locales: dict[str, frozenset[str]] = {}

    def name_of(self, template_name: str | None) -> str | None:
        """The set's name of a template known by its include name or by its origin."""
        if not template_name:
            return None
        if _name(template_name) in self.sources:
            return _name(template_name)
        return next((name for name, origin in self.origins.items() if origin == template_name), None)

    def flows(self) -> set[str]:
        return {name.split("/")[0] for name in self.sources if not name.startswith("_")}

    def locales(self, flow: str) -> set[str]:
        # A set never changes once built (a reload builds a new one): each flow's locales are found once,
        # not by a scan of every template for each message (twice a message).
        found = self._locales.get(flow)
        if found is None:
            found = self._locales[flow] = frozenset(
                name.split("/")[1]
                for name in self.sources
                if name.startswith(f"{flow}/") and name.count("/") == 2 and name.endswith("/subject.liquid")
            )
        return set(found)

    def locale_for(self, flow: str, locale: str | None) -> str:
        available = self._locales.get(flow) or self.locales(flow)
        for candidate in _locale_candidates(locale, self.default_locale):
            if candidate in available:
                return candidate
        return DEFAULT_LOCALE

    def template(self, flow: str, locale: str, part: str) -> BoundTemplate:
        name = f"{flow}/{locale}/{part}.liquid"
        found = self._templates.get(name)
        if found is None:
            if self._base is not None and self.borrows(name):
                found = self._base.template(flow, locale, part)
            else:
                env = self._html if part == "html" else self._plain
                found = env.get_template(name)
            self._templates[name] = found
        return found

    def borrows(self, name: str) -> bool:
        """Whether the template `name` is the base set's: validated there, and reading none of this set's
        own files."""
        if self._base is None:
            return False
        reads = self._base.reads.get(name)
        return reads is not None and reads.isdisjoint(self._own)

    @contextmanager
    def recording(self, name: str) -> Iterator[None]:
        """Notes in `reads` every file loaded meanwhile as read by the template `name`."""
        self._loader.loaded = loaded = {name}
        try:
            yield
        finally:
            self._loader.loaded = None
            self.reads[name] = frozenset(loaded)

    def render(self, flow: str, locale: str | None, context: Mapping[str, Any]) -> RenderedMessage:
        chosen = self.locale_for(flow, locale)
        subject = self.template(flow, chosen, "subject").render(**context)
        text = self.template(flow, chosen, "text").render(**context)
        html = self.template(flow, chosen, "html").render(**context)
        return RenderedMessage(
            # Only ASCII white space: French puts a no-break space before "!" and "?".
            subject=_SPACES.sub(" ", subject).strip(),
            # Optional sections leave empty lines behind; a reader sees at most one blank line in a row.
            text=_BLANK_LINES.sub("\n\n", text).strip() + "\n",
            html=_INLINER.inline(html),
        )


# What each flow hands its templates: top-level names, and a rich sample to check paths and render against.
FlowData = Callable[[str], Mapping[str, Any]]


class TemplateCatalog:
    """The built-in set and each store's set, all validated; immutable once built (a reload builds anew)."""

    def __init__(self, builtin: TemplateSet, stores: Mapping[str, TemplateSet]) -> None:
        self.builtin = builtin
        self._stores = dict(stores)

    def for_store(self, store_id: str | None) -> TemplateSet:
        return self._stores.get(store_id or "", self.builtin)

    @classmethod
    def build(
        cls,
        stores: Iterable[StoreConfig],
        samples: FlowData,
        flows: Iterable[str],
        builtin_dir: Path = TEMPLATES_DIR,
    ) -> TemplateCatalog:
        flows = list(flows)
        builtin_sources, builtin_origins = _read_dir(builtin_dir, "built-in")
        key = (builtin_dir, tuple(sorted(builtin_sources.items())), tuple(flows), samples)
        builtin = _VALIDATED.get(key)
        problems: list[str] = []
        if builtin is None:
            builtin = TemplateSet(builtin_sources, builtin_origins, DEFAULT_LOCALE)
            problems = validate(builtin, flows, samples, "built-in")
            if not problems:
                # Validating takes a second; the built-ins change only with a deploy (or an edit + reload).
                _VALIDATED.clear()
                _VALIDATED[key] = builtin
        sets: dict[str, TemplateSet] = {}
        for store in stores:
            if store.templates_dir is None and store.locale == DEFAULT_LOCALE:
                continue
            sources, origins = dict(builtin_sources), dict(builtin_origins)
            own: dict[str, str] = {}
            if store.templates_dir is not None:
                try:
                    own, own_origins = _read_dir(store.templates_dir, store.store_id)
                except TemplateProblem as exc:
                    problems.extend(exc.problems)
                    continue
                sources.update(own)
                origins.update(own_origins)
            sets[store.store_id] = TemplateSet(sources, origins, store.locale, base=builtin, own=own)
            problems.extend(validate(sets[store.store_id], flows, samples, store.store_id))
        if problems:
            raise TemplateProblem(problems)
        return cls(builtin, sets)


_VALIDATED: dict[Any, TemplateSet] = {}


def _read_dir(root: Path, label: str) -> tuple[dict[str, str], dict[str, str]]:
    if not root.is_dir():
        raise TemplateProblem([f"{label}: templates directory {root} does not exist"])
    base = root.resolve()
    sources: dict[str, str] = {}
    origins: dict[str, str] = {}
    problems: list[str] = []
    for path in sorted(root.rglob("*.liquid")):
        name = path.relative_to(root).as_posix()
        if not path.resolve().is_relative_to(base):
            problems.append(f"{label}/{name}: links outside the store's templates directory")
            continue
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            problems.append(f"{label}/{name}: larger than {MAX_TEMPLATE_BYTES} bytes")
            continue
        try:
            sources[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{label}/{name}: cannot be read: {exc}")
            continue
        origins[name] = f"{label}/{name}"
        if len(sources) > MAX_TEMPLATES:
            problems.append(f"{label}: more than {MAX_TEMPLATES} templates")
            break
    if problems:
        raise TemplateProblem(problems)
    return sources, origins


def validate(templates: TemplateSet, flows: Sequence[str], samples: FlowData, label: str) -> list[str]:
    """Each problem of a set naming its file: missing parts, syntax, unknown variables, render errors."""
    problems: list[str] = []
    for name in templates.sources:
        top = name.split("/")[0]
        if not top.startswith("_") and top not in flows:
            problems.append(f"{label}/{name}: no flow is called {top!r} (flows: {', '.join(flows)})")
        elif not top.startswith("_") and (name.count("/") != 2 or not _LOCALE_DIR.match(name.split("/")[1])):
            problems.append(f"{label}/{name}: expected <flow>/<locale>/{{subject,text,html}}.liquid")
    seen: set[str] = set()
    for flow in flows:
        locales = templates.locales(flow)
        if DEFAULT_LOCALE not in locales:
            problems.append(
                f"{label}/{flow}/{DEFAULT_LOCALE}: the flow has no English templates to fall back on"
            )
        sample = samples(flow)
        for locale in sorted(locales):
            for part in PARTS:
                name = f"{flow}/{locale}/{part}.liquid"
                if templates.borrows(name):
                    continue  # the built-in one, validated with the built-in set
                try:
                    with templates.recording(name):
                        found = _check_one(templates, flow, locale, part, sample, label)
                except _TooSlow as exc:
                    # One render past its deadline refuses the set: the rest is not rendered, so a set of
                    # two thousand slow templates costs the validation (a start, a reload, a draft preview)
                    # one deadline, not two thousand.
                    problems.append(f"{exc} (the set's other templates were not checked)")
                    return problems
                for problem in found:
                    # A broken partial shows once, under the first flow that includes it.
                    where = problem.split(": ", 1)[0]
                    if where not in seen:
                        seen.add(where)
                        problems.append(problem)
    return problems


class _TooSlow(Exception):
    """A render of the validation past its deadline; its text is the problem, naming file and line."""


def _check_one(
    templates: TemplateSet, flow: str, locale: str, part: str, sample: Mapping[str, Any], label: str
) -> list[str]:
    where = f"{label}/{flow}/{locale}/{part}.liquid"
    try:
        template = templates.template(flow, locale, part)
        analysis = template.analyze(include_partials=True)
    except TemplateNotFoundError as exc:
        return [f"{where}: missing ({exc})"]
    except LiquidError as exc:
        return [describe(exc, where)]
    problems = []
    for variables in analysis.globals.values():
        for variable in variables:
            unknown = _unknown_path(variable.segments, sample)
            if unknown is not None:
                file = templates.name_of(variable.span.template_name)
                origin = templates.origins.get(file, where) if file else where
                line = _line_of(templates, file, variable.span.index)
                problems.append(f"{origin}{line}: the {flow} flow has no variable {unknown!r}")
    if problems:
        return problems
    try:
        template.render(**sample)
    except RenderTimeLimitError as exc:
        raise _TooSlow(describe(exc, where)) from exc
    except LiquidError as exc:
        return [describe(exc, where)]
    return []


def _line_of(templates: TemplateSet, name: str | None, index: int) -> str:
    source = templates.sources.get(name) if name else None
    if source is None or index < 0:
        return ""
    return f":{source.count(chr(10), 0, index) + 1}"


_SEQUENCE_PROPERTIES = {"size", "first", "last"}


def _unknown_path(segments: Any, sample: Any) -> str | None:
    """The first part of a variable path the sample data does not have, or None when it is all there."""
    node = sample
    walked: list[str] = []
    for segment in segments if isinstance(segments, list) else [segments]:
        if not isinstance(segment, str):
            return None  # an index or a variable lookup: checked at render time by strict undefined
        walked.append(segment)
        if isinstance(node, Mapping):
            if segment in node:
                node = node[segment]
                continue
            if segment == "size":
                return None
            return ".".join(walked)
        if isinstance(node, (list, tuple)):
            if segment in _SEQUENCE_PROPERTIES:
                node = node[0] if node and segment != "size" else None
                continue
            return ".".join(walked)
        if isinstance(node, str) and segment == "size":
            return None
        if node is None:
            return None  # a sample left this optional part empty; nothing more to check against
        return ".".join(walked)
    return None


def describe(exc: LiquidError, where: str) -> str:
    """ "store/flow/de/html.liquid:3: unexpected tag 'iff'" from whatever python-liquid raised."""
    name = getattr(exc, "template_name", None) or where
    token = getattr(exc, "token", None)
    line = ""
    source = getattr(token, "source", "") or ""
    start = getattr(token, "start_index", -1)
    if source and isinstance(start, int) and start >= 0:
        line = f":{source.count(chr(10), 0, start) + 1}"
    message = exc.args[0] if exc.args else str(exc)
    return f"{name}{line}: {message}"


class TemplateRenderer:
    """What the sender and the API render with. `reload` swaps the whole catalogue at once, only after the
    new one validated; a failed reload leaves the running templates in place."""

    def __init__(
        self,
        templates_dir: Path = TEMPLATES_DIR,
        stores: Iterable[StoreConfig] = (),
        *,
        samples: FlowData | None = None,
        flows: Iterable[str] | None = None,
    ) -> None:
        from services.notifier.domain import samples as flow_samples

        self._dir = templates_dir
        self._samples = samples or flow_samples.template_data
        self._flows = list(flows) if flows is not None else list(flow_samples.EMAIL_FLOWS)
        self._lock = threading.Lock()
        self._catalog = TemplateCatalog.build(stores, self._samples, self._flows, templates_dir)

    def reload(self, stores: Iterable[StoreConfig]) -> None:
        """Build and validate a new catalogue; raises TemplateProblem (keeping the old one) when it fails."""
        catalog = TemplateCatalog.build(stores, self._samples, self._flows, self._dir)
        with self._lock:
            self._catalog = catalog

    def check(self, stores: Iterable[StoreConfig]) -> None:
        """Validate without swapping (the `reload` command checks before it signals)."""
        TemplateCatalog.build(stores, self._samples, self._flows, self._dir)

    def draft(self, store: StoreConfig) -> TemplateSet:
        """The store's templates as they are on disk now, validated, without touching the running ones
        (a preview before a reload); raises TemplateProblem naming every broken file and line."""
        built = TemplateCatalog.build([store], self._samples, self._flows, self._dir)
        return built.for_store(store.store_id)

    def templates_for(self, store: StoreConfig | None) -> TemplateSet:
        catalog = self._catalog
        if (
            store is not None
            and store.store_id not in catalog._stores
            and (store.templates_dir is not None or store.locale != DEFAULT_LOCALE)
        ):
            # A store added since the catalogue was built (tests, or a registry reloaded elsewhere).
            built = TemplateCatalog.build([store], self._samples, self._flows, self._dir)
            with self._lock:
                self._catalog = TemplateCatalog(catalog.builtin, {**catalog._stores, **built._stores})
            return built.for_store(store.store_id)
        return catalog.for_store(store.store_id if store else None)

    def locale_for(self, flow: str, locale: str | None, store: StoreConfig | None = None) -> str:
        return self.templates_for(store).locale_for(flow, locale)

    def render(
        self, flow: str, locale: str | None, context: Mapping[str, Any], store: StoreConfig | None = None
    ) -> RenderedMessage:
        return self.templates_for(store).render(flow, locale, context)


def _locale_candidates(locale: str | None, store_default: str) -> list[str]:
    """`id-ID` → `id` → the store's language (`ms-MY` → `ms`) → `en`."""
    candidates: list[str] = []
    for tag in (locale, store_default):
        if not tag:
            continue
        normalised = tag.replace("_", "-")
        language = normalised.split("-")[0].lower()
        candidates += [normalised, language]
    return [*candidates, DEFAULT_LOCALE]
