"""Rendering messages from Liquid templates: templates/<flow>/<locale>/{subject,text,html}.liquid.

The HTML part is autoescaped (customer names come from storefront input); subject and text are plain.
A locale without its own templates falls back to its language, then to English.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liquid import CachingFileSystemLoader, Environment, FalsyStrictUndefined

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
DEFAULT_LOCALE = "en"
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


class TemplateRenderer:
    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self._dir = templates_dir
        loader = CachingFileSystemLoader(templates_dir)
        # Falsy-strict: `{% if x %}` works on absent data, but printing a misspelt variable fails loudly
        # in tests instead of rendering blank in a customer's inbox.
        self._plain = Environment(loader=loader, undefined=FalsyStrictUndefined)
        self._html = Environment(loader=loader, undefined=FalsyStrictUndefined, autoescape=True)

    def locale_for(self, flow: str, locale: str | None) -> str:
        for candidate in _locale_candidates(locale):
            if (self._dir / flow / candidate / "subject.liquid").is_file():
                return candidate
        return DEFAULT_LOCALE

    def render(self, flow: str, locale: str | None, context: dict[str, Any]) -> RenderedMessage:
        chosen = self.locale_for(flow, locale)
        base = f"{flow}/{chosen}"
        return RenderedMessage(
            subject=" ".join(self._plain.get_template(f"{base}/subject.liquid").render(**context).split()),
            # Optional sections leave empty lines behind; a reader sees at most one blank line in a row.
            text=_BLANK_LINES.sub(
                "\n\n", self._plain.get_template(f"{base}/text.liquid").render(**context)
            ).strip()
            + "\n",
            html=self._html.get_template(f"{base}/html.liquid").render(**context),
        )


def _locale_candidates(locale: str | None) -> list[str]:
    if not locale:
        return [DEFAULT_LOCALE]
    normalised = locale.replace("_", "-")
    language = normalised.split("-")[0].lower()
    return [normalised, language, DEFAULT_LOCALE]
