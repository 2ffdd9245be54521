"""A partial whose output depends only on the values it reads is written again from what it wrote for the same
values (templates._PartialTemplate): the output must be what rendering it afresh gives, whatever changed."""

from __future__ import annotations

import pytest
from liquid.exceptions import LiquidError

from services.notifier.adapters.templates import TemplateSet

TOP = "<h1>{{ store.name }}</h1>{% if brand.colour %}<i>{{ brand.colour }}</i>{% else %}plain{% endif %}"


def templates(page: str, partial: str = TOP) -> TemplateSet:
    sources = {"welcome/en/html.liquid": page, "_partials/top.liquid": partial}
    return TemplateSet(sources, {name: f"test/{name}" for name in sources}, "en")


def html(page: str, partial: str = TOP, **data: object) -> str:
    return templates(page, partial).template("welcome", "en", "html").render(**data)


def test_the_same_partial_follows_each_messages_values() -> None:
    page = templates("{% include '_partials/top.liquid' %}|{{ who }}").template("welcome", "en", "html")
    for name, colour, who in [("A", "red", "x"), ("B", None, "y"), ("A", "red", "z"), ("A", "blue", "x")]:
        fresh = html(
            "{% include '_partials/top.liquid' %}|{{ who }}",
            store={"name": name},
            brand={"colour": colour},
            who=who,
        )
        again = page.render(store={"name": name}, brand={"colour": colour}, who=who)
        assert again == fresh
    assert page.render(store={"name": "A&B"}, brand={}, who="w") == "<h1>A&amp;B</h1>plain|w"


def test_a_value_the_including_template_assigned_is_the_one_the_partial_sees() -> None:
    page = templates(
        "{% include '_partials/top.liquid' %}{% assign store = shop %}{% include '_partials/top.liquid' %}"
    ).template("welcome", "en", "html")
    out = page.render(store={"name": "Own"}, shop={"name": "Other"}, brand={"colour": "red"})
    assert out == "<h1>Own</h1><i>red</i><h1>Other</h1><i>red</i>"
    assert page.render(store={"name": "Own"}, shop={"name": "Third"}, brand={}) == (
        "<h1>Own</h1>plain<h1>Third</h1>plain"
    )


def test_a_partial_that_assigns_still_changes_the_including_template() -> None:
    page = templates("{% include '_partials/top.liquid' %}{{ said }}", "{% assign said = store.name %}")
    first = page.template("welcome", "en", "html")
    assert first.render(store={"name": "One"}) == "One"
    assert first.render(store={"name": "One"}) == "One"
    assert first.render(store={"name": "Two"}) == "Two"


def test_a_partial_printing_something_undefined_still_fails() -> None:
    page = templates("{% include '_partials/top.liquid' %}").template("welcome", "en", "html")
    assert page.render(store={"name": "A"}, brand={}) == "<h1>A</h1>plain"
    with pytest.raises(LiquidError):
        page.render(brand={})


def test_a_partial_read_with_a_list_or_many_names_renders_each_time() -> None:
    loop = "{% for i in items %}{{ i }}{% endfor %}"
    page = templates("{% include '_partials/top.liquid' %}", loop).template("welcome", "en", "html")
    assert page.render(items=[1, 2]) == "12"
    assert page.render(items=[3]) == "3"
    greeting = templates("{% include '_partials/top.liquid' %}", "Hi {{ name }}").template(
        "welcome", "en", "html"
    )
    # More names than outputs kept, and than the lookups after which a partial that finds nothing stops
    # looking: each message still gets its own name, before and after.
    for n in range(400):
        assert greeting.render(name=f"n{n}") == f"Hi n{n}"
    assert greeting.render(name="n1") == "Hi n1"
