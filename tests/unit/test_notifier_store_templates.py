"""A store's own templates: file-by-file fallback, a sandbox, validation that names file and line, and reloads
(SIGHUP included) that keep the running version when the new one is broken."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.notifier.adapters.templates import TEMPLATES_DIR, TemplateProblem, TemplateRenderer
from services.notifier.domain.personalisation import StoreFacts
from services.notifier.domain.samples import data_for, sample_profile, sample_trigger, template_data
from services.notifier.entrypoints.reload import Reloader, load_checked, status_path
from shared.funnel import LoyaltyStage
from shared.logging import configure_logging
from shared.settings import REPO_ROOT
from shared.stores import StoreConfig, StoreRegistry


@pytest.fixture(autouse=True)
def _logs_to_this_tests_stdout() -> None:
    # Another module configures logging onto a captured stdout that pytest closes afterwards.
    configure_logging("notifier-test")


def store(templates: Path | None, store_id: str = "shop", locale: str = "en") -> StoreConfig:
    return StoreConfig.model_validate(
        {
            "store_id": store_id,
            "name": "Toko Kita",
            "api_key": "k",
            "templates_dir": templates,
            "locale": locale,
        }
    )


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refused(root: Path) -> list[str]:
    """The problems that keep the store whose own templates are in `root` from being loaded."""
    with pytest.raises(TemplateProblem) as caught:
        TemplateRenderer(stores=[store(root)])
    return caught.value.problems


def render(renderer: TemplateRenderer, config: StoreConfig, flow: str, locale: str | None) -> Any:
    profile = sample_profile(LoyaltyStage.FIRST_TIME, locale, "Bandung", "Indonesia")
    data = data_for(
        flow,
        StoreFacts.of(config),
        profile,
        sample_trigger(flow, "IDR"),
        None,
        [],
        None,
        renderer.locale_for(flow, locale, config),
    )
    return renderer.render(flow, locale, data, config)


def test_a_stores_file_replaces_only_that_file(tmp_path: Path) -> None:
    write(tmp_path, "welcome/en/subject.liquid", "Thanks a latte, {{ customer.first_name }}!")
    write(tmp_path, "_partials/en/greeting.liquid", "Hey {{ customer.first_name | default: 'friend' }},")
    own, plain = store(tmp_path), store(None, "plain")
    renderer = TemplateRenderer(stores=[own, plain])
    mine = render(renderer, own, "welcome", "en")
    assert mine.subject == "Thanks a latte, Alex!"
    assert mine.text.startswith("Hey Alex,")  # its partial, used by the built-in text
    assert "Thank you for your first order" in mine.text  # the built-in body
    theirs = render(renderer, plain, "welcome", "en")
    assert theirs.subject == "Thank you for your order, Alex!"
    assert theirs.text.startswith("Hi Alex,")


def test_a_store_shares_the_built_in_templates_that_read_none_of_its_files(tmp_path: Path) -> None:
    write(tmp_path, "_partials/en/greeting.liquid", "Hey {{ customer.first_name | default: 'friend' }},")
    own, malay = store(tmp_path), store(None, "kedai", locale="ms-MY")
    renderer = TemplateRenderer(stores=[own, malay])
    builtin, mine, theirs = (renderer.templates_for(s) for s in (None, own, malay))
    names = [name.removesuffix(".liquid").split("/") for name in builtin.reads]
    # Every flow, language and part of the built-ins, validated once.
    assert set(builtin.reads) == {name for name in builtin.sources if not name.startswith("_partials/")}
    # A store that only has its own language renders every template as the built-in set does.
    assert all(theirs.template(*name) is builtin.template(*name) for name in names)
    # One that has its own greeting has its own copy of each template including it, validated as its own;
    # the others (subjects, other languages) are the built-in ones.
    reading = {name for name, read in builtin.reads.items() if "_partials/en/greeting.liquid" in read}
    assert "welcome/en/text.liquid" in reading
    assert "welcome/en/subject.liquid" not in reading
    assert set(mine.reads) == reading
    for name in names:
        shared = "/".join(name) + ".liquid" not in reading
        assert (mine.template(*name) is builtin.template(*name)) == shared, name


def test_built_in_templates_include_partials_by_literal_names() -> None:
    # What a store's set shares with the built-in one rests on this: the files a built-in template's
    # validation loaded are all that any render of it may load, whatever the customer's data.
    tags = re.compile(r"(?:\{%-?|^)\s*(?:include|render)\s+(.)", re.MULTILINE)
    for path in TEMPLATES_DIR.rglob("*.liquid"):
        quoted = [mark in "'\"" for mark in tags.findall(path.read_text())]
        assert all(quoted), path


def test_a_store_may_add_a_language(tmp_path: Path) -> None:
    for part, text in {
        "subject": "Bedankt, {{ customer.first_name }}!",
        "text": "Hoi,\n",
        "html": "<p>Hoi</p>",
    }.items():
        write(tmp_path, f"welcome/nl/{part}.liquid", text)
    own = store(tmp_path)
    renderer = TemplateRenderer(stores=[own])
    assert render(renderer, own, "welcome", "nl-BE").subject == "Bedankt, Alex!"
    assert render(renderer, own, "vip", "nl-BE").subject.startswith("Alex, welcome")  # no Dutch vip: English


def test_the_stores_language_comes_before_english(tmp_path: Path) -> None:
    malay = store(None, "kedai", locale="ms-MY")
    renderer = TemplateRenderer(stores=[malay])
    assert render(renderer, malay, "welcome", "nl-NL").text.startswith("Hai Alex,")
    assert render(renderer, malay, "welcome", "tr-TR").text.startswith("Merhaba Alex,")
    assert render(renderer, malay, "welcome", None).text.startswith("Hai Alex,")


SUBJ = "shop/welcome/en/subject.liquid:"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "Hi {{ customer.first_name }}\n{% iff x %}",
            SUBJ + "2: unexpected tag 'iff'",
        ),
        (
            "{{ customer.frist_name }}",
            SUBJ + "1: the welcome flow has no variable 'customer.frist_name'",
        ),
        (
            "{{ recovery_url }}",
            SUBJ + "1: the welcome flow has no variable 'recovery_url'",
        ),
        # A string doubled in a loop (8 MB here, writing only its size): refused at its first render (the
        # validation) once it holds more than the namespace limit; a few more doublings were gigabytes.
        (
            "{% assign s = 'ab' %}{% for i in (1..22) %}{% assign s = s | append: s %}{% endfor %}"
            "{{ s | size }}",
            SUBJ + "1: local namespace limit reached",
        ),
        ("{% include '../../../etc/passwd' %}", "shop/welcome/en/subject.liquid"),
        ("{% include '/etc/hostname' %}", "shop/welcome/en/subject.liquid"),
    ],
)
def test_a_broken_template_is_refused_naming_file_and_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    write(tmp_path, "welcome/en/subject.liquid", source)
    problems = refused(tmp_path)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_partial_with_an_unknown_variable_names_the_partial(tmp_path: Path) -> None:
    write(tmp_path, "_partials/en/greeting.liquid", "Hi\n{{ customer.nickname }},")
    assert "shop/_partials/en/greeting.liquid:2: the welcome flow has no variable 'customer.nickname'" in (
        refused(tmp_path)
    )


def test_a_link_out_of_the_directory_and_stray_files_are_refused(tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere", "secret.liquid", "s3cr3t")
    (tmp_path / "own" / "welcome" / "en").mkdir(parents=True)
    (tmp_path / "own" / "welcome" / "en" / "text.liquid").symlink_to(outside)
    with pytest.raises(TemplateProblem) as caught:
        TemplateRenderer(stores=[store(tmp_path / "own")])
    assert caught.value.problems == [
        "shop/welcome/en/text.liquid: links outside the store's templates directory"
    ]
    write(tmp_path / "typo", "welcom/en/subject.liquid", "typo in the flow's name")
    with pytest.raises(TemplateProblem) as caught:
        TemplateRenderer(stores=[store(tmp_path / "typo")])
    assert caught.value.problems[0].startswith("shop/welcom/en/subject.liquid: no flow is called 'welcom'")


def test_a_missing_directory_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(TemplateProblem, match="does not exist"):
        TemplateRenderer(stores=[store(tmp_path / "nowhere")])


def test_files_edited_on_disk_change_nothing_until_a_reload(tmp_path: Path) -> None:
    subject = write(tmp_path, "welcome/en/subject.liquid", "First version")
    own = store(tmp_path)
    renderer = TemplateRenderer(stores=[own])
    subject.write_text("Second version")
    assert render(renderer, own, "welcome", "en").subject == "First version"
    renderer.reload([own])
    assert render(renderer, own, "welcome", "en").subject == "Second version"


def registry_file(tmp_path: Path, templates: Path, name: str = "Toko Kita") -> Path:
    path = tmp_path / "stores.yaml"
    path.write_text(
        f"stores:\n  shop:\n    name: {name}\n    api_key: k\n    templates_dir: {templates.name}\n"
    )
    return path


def reloader_for(
    tmp_path: Path, forgotten: list[str] | None = None
) -> tuple[Reloader, StoreRegistry, TemplateRenderer, Path]:
    templates = tmp_path / "shop-templates"
    write(templates, "welcome/en/subject.liquid", "Version one")
    stores_file = registry_file(tmp_path, templates)
    registry = StoreRegistry.load(stores_file)
    renderer = TemplateRenderer(stores=list(registry))
    reloader = Reloader(
        stores=registry,
        renderer=renderer,
        stores_file=stores_file,
        production=False,
        pidfile=tmp_path / "notifier.pid",
        clock=lambda: datetime(2026, 11, 30, tzinfo=UTC),
        on_reloaded=[lambda: (forgotten if forgotten is not None else []).append("platform clients")],
    )
    return reloader, registry, renderer, templates


def test_a_reload_swaps_registry_and_templates_together(tmp_path: Path) -> None:
    forgotten: list[str] = []
    reloader, registry, renderer, templates = reloader_for(tmp_path, forgotten)
    (templates / "welcome/en/subject.liquid").write_text("Version two")
    registry_file(tmp_path, templates, name="Toko Baru")
    outcome = reloader.reload()
    assert outcome.ok
    shop = registry.get("shop")
    assert shop is not None
    assert shop.name == "Toko Baru"  # the same registry object, new settings
    assert forgotten == ["platform clients"]  # what was built from the old settings is rebuilt
    assert render(renderer, shop, "welcome", "en").subject == "Version two"


def test_a_failing_reload_keeps_the_running_version_and_says_why(tmp_path: Path) -> None:
    forgotten: list[str] = []
    reloader, registry, renderer, templates = reloader_for(tmp_path, forgotten)
    (templates / "welcome/en/subject.liquid").write_text("{{ customer.first_name ")
    registry_file(tmp_path, templates, name="Toko Baru")
    outcome = reloader.reload()
    assert not outcome.ok
    assert outcome.problems[0].startswith("shop/welcome/en/subject.liquid:1:")
    shop = registry.get("shop")
    assert shop is not None
    assert shop.name == "Toko Kita"
    assert forgotten == []
    assert render(renderer, shop, "welcome", "en").subject == "Version one"
    recorded = json.loads(status_path(tmp_path / "notifier.pid").read_text())
    assert recorded["ok"] is False
    assert recorded["problems"] == outcome.problems


async def test_sighup_reloads_the_running_process(tmp_path: Path) -> None:
    reloader, registry, renderer, templates = reloader_for(tmp_path)
    reloader.start()
    try:
        assert (tmp_path / "notifier.pid").read_text().strip() == str(os.getpid())
        (templates / "welcome/en/subject.liquid").write_text("After the signal")
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 30
        status = status_path(tmp_path / "notifier.pid")
        while not status.exists() and time.monotonic() < deadline:  # noqa: ASYNC110 (a file, not an event)
            await asyncio.sleep(0.05)
        assert json.loads(status.read_text())["ok"] is True
        shop = registry.get("shop")
        assert shop is not None
        assert render(renderer, shop, "welcome", "en").subject == "After the signal"
    finally:
        reloader.stop()
    assert not (tmp_path / "notifier.pid").exists()
    assert not status.exists()


def test_a_draft_shows_the_files_on_disk_without_touching_the_running_set(tmp_path: Path) -> None:
    subject = write(tmp_path, "welcome/en/subject.liquid", "Live version")
    own = store(tmp_path)
    renderer = TemplateRenderer(stores=[own])
    subject.write_text("Draft version, {{ customer.first_name }}")
    draft = renderer.draft(own)
    assert draft.render("welcome", "en", template_data("welcome")).subject == "Draft version, Alex"
    assert render(renderer, own, "welcome", "en").subject == "Live version"
    subject.write_text("Draft {{ customer.surname }}")
    with pytest.raises(TemplateProblem) as caught:
        renderer.draft(own)
    assert caught.value.problems == [SUBJ + "1: the welcome flow has no variable 'customer.surname'"]
    assert render(renderer, own, "welcome", "en").subject == "Live version"


def test_the_development_registry_and_its_templates_validate() -> None:
    # What `python -m services.notifier check-templates` runs; CI runs it here on every store of the registry.
    registry = load_checked(
        REPO_ROOT / "deploy" / "stores.dev.yaml", production=False, renderer=TemplateRenderer()
    )
    demo = registry.get("demo")
    assert demo is not None
    assert demo.templates_dir == REPO_ROOT / "deploy" / "templates" / "demo"


async def test_an_unwritable_pidfile_does_not_stop_the_notifier(tmp_path: Path) -> None:
    reloader, *_ = reloader_for(tmp_path)
    not_a_directory = write(tmp_path, "a-file", "")
    reloader._pidfile = not_a_directory / "notifier.pid"  # cannot be created, not even by root
    try:
        reloader.start()  # logs pidfile_unwritable and carries on, SIGHUP included
        assert reloader._pidfile is None
        assert reloader.reload().ok
    finally:
        reloader.stop()
