"""Field types for values that end up in a header, an address, a URL or a path: checked where they enter.

An email address goes into a To header and an SMTP envelope, a locale picks a template directory: a CR/LF
in the one or a `../` in the other must be refused at ingest's edge (422 naming the field), not discovered
while building a message.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from pydantic import AfterValidator, BeforeValidator

# The local part: printable characters other than whitespace and the specials of RFC 5322 that only a
# quoted local part may hold (quoted local parts are legal but no store sends them; refusing them keeps
# every address safe to put in a header unquoted). Non-ASCII letters are allowed (RFC 6531).
_LOCAL = r"[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]{1,64}"
# The domain: dot-separated labels of letters (any script), digits and inner hyphens, at least two labels.
_LABEL = r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?)"
_EMAIL = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})+", re.UNICODE)

# BCP 47 language tags (RFC 5646, the "langtag" production, case-insensitive): language, optional
# script, region, variants, extensions and a private-use part; also a bare private-use tag.
LANGUAGE_TAG_PATTERN = re.compile(
    r"(?:[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4}|[a-z]{5,8})"
    r"(?:-[a-z]{4})?"
    r"(?:-(?:[a-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*"
    r"(?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*"
    r"(?:-x(?:-[a-z0-9]{1,8})+)?"
    r"|x(?:-[a-z0-9]{1,8})+",
    re.IGNORECASE | re.ASCII,
)


def email_address(value: str) -> str:
    """Trimmed and lower-cased (one customer, one email); refuses anything that is not one address."""
    value = value.strip().lower()
    if len(value) > 320 or not _EMAIL.fullmatch(value):
        raise ValueError("is not an email address (one address, no spaces or control characters)")
    return value


def language_tag(value: str) -> str:
    """A BCP 47 language tag such as `en`, `pt-BR` or `zh-Hant-TW`; `en_US` (POSIX style) becomes `en-US`."""
    value = value.strip().replace("_", "-")
    if len(value) > 35 or not LANGUAGE_TAG_PATTERN.fullmatch(value):
        raise ValueError("is not a BCP 47 language tag such as en or pt-BR")
    return value


def url_segment(value: str) -> str:
    """An identifier placed in a URL path: every character outside the unreserved set is escaped, `/` too."""
    return quote(value, safe="")


def _blank_is_none(value: object) -> object:
    # Platforms send "" for "not known" (a POS order without email): a missing value, not an invalid one.
    return None if isinstance(value, str) and not value.strip() else value


EmailAddress = Annotated[str, AfterValidator(email_address)]
LanguageTag = Annotated[str, AfterValidator(language_tag)]
# For the platforms' payload models: blank means absent.
OptionalEmail = Annotated[EmailAddress | None, BeforeValidator(_blank_is_none)]
OptionalLanguageTag = Annotated[LanguageTag | None, BeforeValidator(_blank_is_none)]
