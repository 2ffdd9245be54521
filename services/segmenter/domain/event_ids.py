"""The funnel events' ids: deterministic, so replaying the same storefront event yields the same ids, which
downstream consumers dedupe on.

An id is `str(uuid.uuid5(_NAMESPACE, f"{caused_by}/{kind}"))`, computed without the UUID object (its int
conversions were most of the cost, and the segmenter makes one id per funnel event). Compiled with the
rules that call it (shared/compiled.py): interpreted, a call took about 14,000 instructions under callgrind
(OpenSSL's SHA-1 about 3,800 of them), compiled about 8,000 (bench/README.md, fifty-first round).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

_NAMESPACE: Final = uuid.UUID("6f1f7d2e-4a43-4b8e-9a55-0c7b3f1d2a10")
# A copy of the hash that has taken in the namespace already: 0.7 µs instead of 1.25 for a new one.
_NAMESPACE_SHA1: Final = hashlib.sha1(_NAMESPACE.bytes, usedforsecurity=False)

# RFC 9562 (4122) sets the version's four bits (5: the digit at hex position 12) and the variant's two
# (0b10: the digit at position 16 becomes 8, 9, a or b, keeping its two low bits), read here from the hex
# digest, without a bytearray to change them in.
_VARIANT_DIGIT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def funnel_event_id(caused_by: str, kind: str) -> str:
    """The id of the funnel event of this kind (with its key, if any) caused by this event or timer."""
    sha = _NAMESPACE_SHA1.copy()
    sha.update(f"{caused_by}/{kind}".encode())
    h: str = sha.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"
