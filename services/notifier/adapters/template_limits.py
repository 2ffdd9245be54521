"""What one render of a store's template may cost: no value bigger than an email, at most a second of CPU.

python-liquid bounds loops, nesting, what a template writes and what it assigns (see templates.py), but not
what a filter makes or what a range holds, and a filter makes it all at once, before any of those limits
looks: `{{ (1..100000000) | join: "," }}` took 27 s and 7.8 GB; eight chained `replace` filters made a
gigabyte out of ten characters; `(1..1000000000000) contains "x"` walks the range inside C, where nothing
can stop it; two hundred loops in a row, each within the loop limit, ran for 1.4 s, and a template may hold
seven thousand. One notifier renders every store's mail, so one store's template (a typo, or an owner's
experiment) must not stall or exhaust it for all the others. So, in every render:

- a range holds at most MAX_ITEMS numbers, as many as one loop may walk;
- no filter makes a string of more than MAX_TEXT characters (what one part of an email may hold), a list of
  more than MAX_ITEMS items or MAX_TEXT characters in all, or a number of more than MAX_DIGITS digits; the two
  filters that can make far more than that in one call (`join`, `replace`) are checked before they run, the
  others (at most a dozen times their input, or a product of two bounded numbers) after;
- a filter that fails on a value (`floor` of infinity, a decimal `modulo` out of range) fails as a template
  error naming the filter, as python-liquid's own checks do, not as an exception the caller never expected
  (and so does a tag, in templates.py);
- a render that has used RENDER_SECONDS of CPU stops at its next filter, loop turn or partial. CPU, not the
  wall clock: on a loaded machine (a test suite beside another, here) a render of a built-in template waited
  past a second of wall time, and a notifier whose validation refuses its own templates does not start. And
  not the garbage collector's CPU either, which a render pays whenever its allocations set off a collection
  of the whole process's heap: 160 ms of one validation's 1 ms renders, more in a larger process.

Each of these is a Liquid error carrying the filter's place in the template, so validation names the file
and line, the preview API answers 422, and the sender fails that one message and goes on.
"""

from __future__ import annotations

import decimal
import gc
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext
from liquid.ast import Node
from liquid.builtin.expressions.primitive import RangeLiteral
from liquid.exceptions import FilterArgumentError, ResourceLimitError
from liquid.expression import Expression

MAX_TEXT = 512 * 1024  # also the environment's output_stream_limit: what one part of one email may hold
MAX_ITEMS = 10_000  # also the environment's loop_iteration_limit
MAX_DIGITS = 4300  # CPython's own bound on converting an int to text
_MAX_BITS = int(MAX_DIGITS * math.log2(10))
RENDER_SECONDS = 1.0  # of the rendering thread's CPU; the built-in templates use about a millisecond a part


class TemplateLimitError(FilterArgumentError, ResourceLimitError):
    """A value beyond these bounds. A FilterArgumentError, so python-liquid gives it the filter's token and
    the problem names its file and line; a ResourceLimitError, for what it is."""


class RenderTimeLimitError(TemplateLimitError):
    """A render that used too much CPU."""


class TemplateValueError(FilterArgumentError):
    """A filter or a tag that failed on its value with Python's own exception (OverflowError, decimal's
    InvalidOperation, ValueError), told as a template error like python-liquid's checks."""


class _Collections:
    """The CPU the garbage collector has used in this process, from its own callbacks: a render's CPU is its
    thread's less what collections took meanwhile. (Collections hold the GIL: one at a time.)"""

    started = 0.0
    spent = 0.0

    @classmethod
    def note(cls, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            cls.started = time.thread_time()
        else:
            cls.spent += time.thread_time() - cls.started


gc.callbacks.append(_Collections.note)


def _cpu() -> float:
    return time.thread_time() - _Collections.spent


class BoundedContext(RenderContext):
    """A render context with a deadline in CPU time: set when a template's render starts, shared by every
    partial it renders (python-liquid makes their contexts with `self.__class__`, passing this one as the
    parent).

    The deadline is looked at wherever a render can repeat work: each filter, each loop's every turn, each
    partial included or rendered. What runs between two looks is one template's own nodes, once."""

    __slots__ = ("cpu_deadline", "deadline")

    def __init__(self, template: BoundTemplate, **kwargs: Any) -> None:
        super().__init__(template, **kwargs)
        parent = kwargs.get("parent_context")
        if isinstance(parent, BoundedContext):  # a partial's, by `render`
            self.deadline: float = parent.deadline
            self.cpu_deadline: float = parent.cpu_deadline
            self.check_time()
        else:
            self.deadline = time.monotonic() + RENDER_SECONDS
            self.cpu_deadline = _cpu() + RENDER_SECONDS

    @contextmanager
    def extend(
        self, namespace: Mapping[str, object], template: BoundTemplate | None = None
    ) -> Iterator[RenderContext]:
        self.check_time()  # a partial by `include`, and each loop
        with super().extend(namespace, template) as context:
            yield context

    @contextmanager
    def loop(self, namespace: Mapping[str, object], forloop: Any) -> Iterator[RenderContext]:
        # `for` and `tablerow` step through their loop object's `it`: each turn looks at the clock first.
        forloop.it = self._on_time(forloop.it)
        with super().loop(namespace, forloop) as context:
            yield context

    def _on_time(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.check_time()
            yield item

    def check_time(self) -> None:
        # The wall clock first: 40 ns a look against 570 for the thread's CPU clock (a system call on this
        # machine), and a thread cannot have used more CPU than the time that has passed.
        if time.monotonic() > self.deadline and _cpu() > self.cpu_deadline:
            raise RenderTimeLimitError(
                f"the template used more than {RENDER_SECONDS:g} s of CPU time rendering", token=None
            )


class _BoundedRange(RangeLiteral):
    """A range literal that refuses to hold more than MAX_ITEMS numbers (set on each parsed range)."""

    __slots__ = ()

    def _make_range(self, start: Any, stop: Any) -> range:
        made = super()._make_range(start, stop)
        # Not len(): a range of more numbers than a C ssize_t holds cannot say its length.
        if made.stop - made.start > MAX_ITEMS:
            raise TemplateLimitError(
                f"a range may hold at most {MAX_ITEMS:,} numbers; this one holds {made.stop - made.start:,}",
                token=self.token,
            )
        return made


def bound_ranges(env: Environment, nodes: list[Node]) -> None:
    """Make every range literal in a parsed template a bounded one (its class only: same fields)."""
    static = RenderContext(BoundTemplate(env, nodes))
    pending: list[Node] = list(nodes)
    while pending:
        node = pending.pop()
        _bound_expressions(node.expressions())
        # Partials are parsed, and bounded, when they are loaded: not followed here.
        pending.extend(node.children(static, include_partials=False))


def _bound_expressions(expressions: Iterable[Expression]) -> None:
    pending = list(expressions)
    while pending:
        expression = pending.pop()
        if type(expression) is RangeLiteral:
            expression.__class__ = _BoundedRange
        pending.extend(expression.children())


class BoundedFilter:
    """One of the environment's filters, with the checks above around each call."""

    with_context = True  # for the render's deadline; handed on only to a filter that asked for it

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = name
        self.func = func
        self._wants_context = bool(getattr(func, "with_context", False))
        self.with_environment = bool(getattr(func, "with_environment", False))
        self._before = _CHECKED_BEFORE.get(name)
        validate = getattr(func, "validate", None)
        if validate is not None:
            # python-liquid checks a filter's arguments at parse time through this, when the filter has it.
            self.validate = validate

    def __call__(self, left: object, *args: object, context: RenderContext, **kwargs: object) -> object:
        if isinstance(context, BoundedContext):
            context.check_time()
        if self._before is not None:
            self._before(left, args)
        if self._wants_context:
            kwargs["context"] = context
        try:
            result = self.func(left, *args, **kwargs)
        except (ArithmeticError, LookupError, ValueError) as exc:
            # decimal's exceptions say only their class ("[<class 'decimal.InvalidOperation'>]").
            reason = "a number out of its range" if isinstance(exc, decimal.DecimalException) else str(exc)
            raise TemplateValueError(f"{self.name}: {reason}", token=None) from exc
        _check_result(self.name, result)
        return result


def bounded(name: str, func: Callable[..., Any]) -> BoundedFilter:
    return func if isinstance(func, BoundedFilter) else BoundedFilter(name, func)


def _check_result(name: str, value: object) -> None:
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise TemplateLimitError(
                f"{name}: would make {len(value):,} characters, more than {MAX_TEXT:,}", token=None
            )
    elif isinstance(value, (list, tuple)):
        _check_items(name, value)
    elif isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise TemplateLimitError(f"{name}: would make a number of over {MAX_DIGITS:,} digits", token=None)


def _check_items(name: str, value: list[object] | tuple[object, ...]) -> None:
    """At most MAX_ITEMS items and MAX_TEXT characters of text in all, nested lists counted in (python-liquid
    flattens them), stopping as soon as either is passed."""
    items = 0
    text = 0
    pending: list[object] = list(value)
    while pending:
        item = pending.pop()
        if isinstance(item, (list, tuple)):
            pending.extend(item)
            continue
        items += 1
        if isinstance(item, str):
            text += len(item)
        if items > MAX_ITEMS:
            raise TemplateLimitError(f"{name}: would make a list of over {MAX_ITEMS:,} items", token=None)
        if text > MAX_TEXT:
            raise TemplateLimitError(f"{name}: would make a list of over {MAX_TEXT:,} characters", token=None)


def _join_before(left: object, args: tuple[object, ...]) -> None:
    separator = args[0] if args else " "
    if not isinstance(left, (list, tuple)):
        return  # a string or a single value is joined as one item: no separator
    count = len(left)  # nested lists flatten to more, and each of those is a result checked already
    width = len(str(separator))
    if count > 1 and (count - 1) * width > MAX_TEXT:
        raise TemplateLimitError(
            f"join: {count:,} items joined by {width:,} characters would make more than {MAX_TEXT:,}",
            token=None,
        )


def _replace_before(left: object, args: tuple[object, ...]) -> None:
    if not isinstance(left, str) or not args:
        return  # other values are made text first: no longer than what the result check allows
    sequence = str(args[0])
    substitute = str(args[1]) if len(args) > 1 else ""
    if len(substitute) <= len(sequence):
        return
    found = left.count(sequence) if sequence else len(left) + 1
    made = len(left) + found * (len(substitute) - len(sequence))
    if made > MAX_TEXT:
        raise TemplateLimitError(
            f"replace: would make {made:,} characters, more than {MAX_TEXT:,}", token=None
        )


_CHECKED_BEFORE: dict[str, Callable[[object, tuple[object, ...]], None]] = {
    "join": _join_before,
    "replace": _replace_before,
}
