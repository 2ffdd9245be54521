"""One render of a store's template costs at most an email's worth of memory and a second of CPU: what a
filter would make and what a range holds are bounded before they are made, a render stops at its deadline
(partials included), and a filter's own Python exception is a template error naming file and line. Before, a
template of a few hundred bytes could hold the notifier for minutes or take gigabytes from every store's
email."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.notifier.adapters import template_limits
from services.notifier.adapters.templates import TemplateRenderer, _Environment
from tests.unit.test_notifier_store_templates import refused, render, store, write

WHERE = "shop/welcome/en/subject.liquid:1: "
IFS = "{% if customer.first_name == 'x' %}{% endif %}" * 1000
FIVE_REPLACES = '{{ "aaaaaaaaaa"' + ' | replace: "a", "aaaaaaaaaa"' * 5 + " | size }}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # (1..100000000) | join took 27 s and 7.8 GB before the output limit could see anything.
        ('{{ (1..20000) | join: "," | size }}', "a range may hold at most 10,000 numbers; this one holds"),
        # `contains` walks a range in C when it looks for anything but a whole number.
        ('{% if (1..30000) contains "x" %}x{% endif %}', "a range may hold at most 10,000 numbers"),
        # Ten characters made a megabyte here; three more replaces would be a gigabyte.
        (FIVE_REPLACES, "replace: would make 1,000,000 characters, more than 524,288"),
        ('{{ "a,b,c,d,e,f" | split: "," | join: "' + "x" * 120_000 + '" }}', "join: 6 items joined by 120,"),
        ('{{ "' + "a" * 20_001 + '" | split: "" | size }}', "split: would make a list of over 10,000 items"),
        (
            '{% assign s = "' + "a" * 100_000 + '" | split: "," %}'
            "{% for i in (1..5) %}{% assign s = s | concat: s %}{% endfor %}{{ s | size }}",
            "concat: would make a list of over 524,288 characters",
        ),
        (
            "{% assign n = 99999999999999999999 %}"
            "{% for i in (1..10) %}{% assign n = n | times: n %}{% endfor %}{{ n | size }}",
            "times: would make a number of over 4,300 digits",
        ),
        # Python's own exceptions, which escaped validation (and the preview API, as a 500) before.
        ('{{ "1e999" | floor }}', "floor: cannot convert float infinity to integer"),
        ('{{ "1e99999999" | modulo: 7 }}', "modulo: a number out of its range"),
        (
            '{{ "a" | compact: -99999999999999999999 }}',
            "compact: cannot fit 'int' into an index-sized integer",
        ),
    ],
)
def test_a_template_that_would_make_too_much_is_refused_naming_file_and_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    write(tmp_path, "welcome/en/subject.liquid", source)
    problems = refused(tmp_path)
    assert any(problem.startswith(WHERE + expected) for problem in problems), problems


def test_a_tag_that_fails_with_pythons_own_exception_is_a_template_error(tmp_path: Path) -> None:
    # python-liquid's `for` hands a negative limit to islice, whose ValueError escaped the validation (a
    # notifier that would not start, a reload or a preview that failed with a traceback).
    write(
        tmp_path, "welcome/en/subject.liquid", "{% for i in (1..3) limit: -1 offset: -1 %}{{ i }}{% endfor %}"
    )
    assert refused(tmp_path) == [
        "shop/welcome/en/subject.liquid: ValueError: Indices for islice() must be None or an integer: "
        "0 <= x <= sys.maxsize."
    ]


@pytest.mark.parametrize(
    "source",
    [
        # Each loop within the loop limit: a thousand in a row ran for seconds.
        "{% for i in (1..10000) %}{% endfor %}" * 1000 + "Hi",
        # The same in partials, each in a context of its own that keeps the including one's deadline.
        "{% render '_partials/en/loop.liquid' %}" * 1000 + "Hi",
        # One loop whose every turn is long, and partials with neither loops nor filters: the deadline is
        # looked at each turn and each partial, not only as a loop starts.
        "{% for i in (1..10000) %}" + IFS + "{% endfor %}Hi",
        "{% include '_partials/en/ifs.liquid' %}" * 1000 + "Hi",
    ],
)
def test_a_render_stops_at_its_deadline_partials_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.setattr(template_limits, "RENDER_SECONDS", 0.2)
    write(tmp_path, "_partials/en/loop.liquid", "{% for i in (1..10000) %}{% endfor %}")
    # (An assign, so that its output is not kept from one include to the next: templates.py's partials.)
    write(tmp_path, "_partials/en/ifs.liquid", "{% assign seen = true %}" + IFS)
    write(tmp_path, "welcome/en/subject.liquid", source)
    assert refused(tmp_path) == [
        f"{WHERE}the template used more than 0.2 s of CPU time rendering (the set's other templates were "
        "not checked)"
    ]


def test_the_deadline_counts_the_renders_own_cpu_not_waits_nor_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a loaded machine a render of a built-in template waited past a second of wall time, and one paid
    # 160 ms for a collection of the whole heap: the validation refused the notifier's own templates.
    monkeypatch.setattr(template_limits, "RENDER_SECONDS", 0.2)
    env = _Environment()
    env.add_filter("nap", lambda value: _after(value, time.sleep))
    env.add_filter("collect", lambda value: _after(value, _collect))
    env.add_filter("busy", lambda value: _after(value, _spin))
    assert env.from_string("{% for i in (1..3) %}{{ i | nap }}{% endfor %}").render() == "123"
    assert env.from_string("{% for i in (1..3) %}{{ i | collect }}{% endfor %}").render() == "123"
    with pytest.raises(template_limits.RenderTimeLimitError):
        env.from_string("{% for i in (1..3) %}{{ i | busy }}{% endfor %}").render()


def _after(value: object, wait: Callable[[float], None]) -> object:
    wait(0.1)  # three of them: past the deadline
    return value


def _spin(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def _collect(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        gc.collect()


def test_a_set_stops_being_checked_at_its_first_render_past_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every part of every flow slow: checked one by one, the validation (of a start, a reload, each draft
    # preview) would have spent the deadline thirty times over; one is enough to refuse the set.
    monkeypatch.setattr(template_limits, "RENDER_SECONDS", 0.2)
    slow = "{% for i in (1..10000) %}" + IFS + "{% endfor %}"
    for flow in ("welcome", "vip", "win_back"):
        for part in ("subject", "text", "html"):
            write(tmp_path, f"{flow}/en/{part}.liquid", slow)
    assert [problem for problem in refused(tmp_path) if "CPU time" in problem] == [
        f"{WHERE}the template used more than 0.2 s of CPU time rendering (the set's other templates were "
        "not checked)"
    ]


def test_filters_still_get_their_context_and_environment_and_their_argument_checks(tmp_path: Path) -> None:
    # `join` reads the environment (autoescape), `default` takes a keyword, and a filter given the wrong
    # arguments is still refused.
    write(
        tmp_path,
        "welcome/en/subject.liquid",
        '{{ "a,b" | split: "," | join: "+" }} {{ false | default: "x", allow_false: true }} '
        '{{ "2026-12-07" | date: "%Y" }} {{ (1..10000) | size }} {{ customer.first_name | upcase }}',
    )
    config = store(tmp_path)
    assert render(TemplateRenderer(stores=[config]), config, "welcome", "en").subject == (
        "a+b false 2026 10000 ALEX"
    )
    write(tmp_path, "welcome/en/subject.liquid", '{{ "a" | join: "+", "-" }}')
    assert refused(tmp_path)
