"""What every source mapper shares: the platforms' signature scheme and the base of their payload models."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from services.ingest.sources.fitting import without_nul
from shared.events import reject_nul


def hmac_sha256_base64(secret: str, body: bytes) -> str:
    """Shopify's X-Shopify-Hmac-Sha256 and WooCommerce's X-WC-Webhook-Signature: base64 HMAC-SHA256 of the
    raw body, keyed with the webhook secret."""
    # hmac.digest: OpenSSL's one-shot HMAC, without the Python HMAC object (2 µs less on a 4 KB body).
    return base64.b64encode(hmac.digest(secret.encode(), body, hashlib.sha256)).decode()


def signature_matches(secret: str, body: bytes, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(hmac_sha256_base64(secret, body).encode(), presented.strip().encode())


@dataclass(frozen=True)
class Checked:
    """What the route already checked on the raw body: the source models' validation context
    (`model_validate(payload, context=...)`)."""

    # No string of the payload holds a NUL, so the per-field search for one is skipped.
    nul_free: bool = False
    # No string of the payload holds a lone surrogate, which the models refuse as not text (the routes'
    # parse_json refuses such bodies first; the hand readers that rely on this do not look for them).
    surrogate_free: bool = False

    @classmethod
    def body(cls, body: bytes) -> Checked:
        # JSON carries NUL only as the escape \u0000 (a raw one is not valid JSON), unless the body is
        # UTF-16 or UTF-32, which json.loads also reads: their ASCII characters hold zero bytes. A lone
        # surrogate only as an escape \ud800-\udfff (raw, it is not UTF-8); `\ud` or `\uD` also finds a
        # few other characters' escapes, which merely take the models' path.
        # `find`, not `in`: CPython's `in` on bytes first tries its operand as a byte's value, and formats
        # the TypeError that a bytes operand raises before it searches (about 1,000 instructions each).
        if body.find(b"\x00") >= 0:
            return NOTHING_CHECKED
        if body.find(b"\\") < 0:
            # No escape at all (the usual body): one search for one byte (memchr) answers both, where the
            # searches for the escapes took a webhook 3-4 µs each.
            return _PLAIN
        return _escapes_checked(body)


def _escapes_checked(body: bytes) -> Checked:
    """`Checked.body` of a body with escapes: every `\\u0000`, `\\ud` and `\\uD` starts with a backslash and
    holds no other, so the escapes the regular expression finds (one pass in C, without overlaps) are
    exactly those searching the body for each of them finds. A Segment batch of the benchmark (100 KB, ~130
    escapes of non-ASCII text) took 156 µs looking after each backslash in Python, 60 this way."""
    nul_free = surrogate_free = True
    for found in _ESCAPES.finditer(body):
        if found.end() - found.start() == 6:  # \u0000
            nul_free = False
        else:
            surrogate_free = False
        if not (nul_free or surrogate_free):
            break
    return Checked(nul_free=nul_free, surrogate_free=surrogate_free)


# A NUL's escape, or the start of a (lone or paired) surrogate's.
_ESCAPES = re.compile(rb"\\u(?:0000|[dD])")
NOTHING_CHECKED = Checked()
_PLAIN = Checked(nul_free=True, surrogate_free=True)


class SourceModel(BaseModel):
    """Platforms add fields over API versions and plugins; we read what we need and ignore the rest.

    NUL characters are refused here, so the 422 names the source's own field."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        # Searching every string, dict and list of a call was a quarter of a Segment batch's mapping time,
        # and a body without a NUL in it cannot have one in any field.
        checked = info.context
        if isinstance(checked, Checked) and checked.nul_free:
            return value
        return cls._nul_free(value)

    @staticmethod
    def _nul_free(value: Any) -> Any:
        """The field's value without a NUL: here refused (a ValueError naming the field)."""
        return reject_nul(value)


class SignedSourceModel(SourceModel):
    """A platform's signed payload (Shopify, WooCommerce): a NUL a shopper typed is removed, not refused,
    because a refused webhook is only resent and counted against it (sources/fitting.py)."""

    @staticmethod
    def _nul_free(value: Any) -> Any:
        return without_nul(value)
