"""What a store registry must satisfy before a service starts with it. Pure: values in, problems out.

Every problem of every store is listed at once, so a failing deploy is fixed in one go. Some rules hold in
every environment (two stores sharing a shop domain would send one store's events to the other); the rest
only in production, where a guessable secret or a plain-http URL is a real exposure.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import AnyUrl, BaseModel, ConfigDict, SecretStr

from shared.audience_rules import is_loopback_host

# Secrets that ship in the development registry; a production deploy must not run with them.
PLACEHOLDER_PREFIXES = ("demo-", "change-me", "changeme", "example", "dev-", "test-", "ck_demo", "cs_demo")
# A production secret: at least this long and this unpredictable (estimated from its own characters).
MIN_SECRET_LENGTH = 24
MIN_SECRET_BITS = 96.0


class SecretFacts(BaseModel):
    """What the checks need to know of a secret that is not kept (a store's API key is kept hashed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    length: int
    entropy_bits: float
    placeholder: bool

    @classmethod
    def of(cls, secret: str) -> SecretFacts:
        return cls(
            length=len(secret),
            entropy_bits=entropy_bits(secret),
            placeholder=secret.lower().startswith(PLACEHOLDER_PREFIXES),
        )


def entropy_bits(secret: str) -> float:
    """Shannon entropy of the secret's own characters times its length: a rough upper bound of how hard it
    is to guess (`aaaa...` scores 0, 32 random hex digits about 120, a 43-character token about 240)."""
    if not secret:
        return 0.0
    counts = Counter(secret)
    per_char = -sum((n / len(secret)) * math.log2(n / len(secret)) for n in counts.values())
    return per_char * len(secret)


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_problems(where: str, facts: SecretFacts) -> list[str]:
    problems = []
    if facts.placeholder:
        problems.append(f"{where}: a development placeholder secret")
    if facts.length < MIN_SECRET_LENGTH:
        problems.append(f"{where}: shorter than {MIN_SECRET_LENGTH} characters")
    elif facts.entropy_bits < MIN_SECRET_BITS:
        problems.append(
            f"{where}: too predictable (about {facts.entropy_bits:.0f} bits, {MIN_SECRET_BITS:.0f} needed)"
        )
    return problems


def walk(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, field name, value) of every field of a model, nested models, dicts and lists included."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            child = getattr(value, name)
            yield from _walk_child(child, f"{path}.{name}" if path else name, name)
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _walk_child(child, f"{path}.{key}", str(key))
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            yield from _walk_child(child, f"{path}[{index}]", "")


def _walk_child(child: Any, path: str, name: str) -> Iterator[tuple[str, str, Any]]:
    yield path, name, child
    yield from walk(child, path)


def secrets_of(model: BaseModel) -> Iterator[tuple[str, str]]:
    for path, _, value in walk(model):
        if isinstance(value, SecretStr):
            yield path, value.get_secret_value()


def urls_of(model: BaseModel) -> Iterator[tuple[str, str]]:
    """Every URL the services call or put in front of customers: fields named `*url` and URL-typed ones."""
    for path, name, value in walk(model):
        if isinstance(value, AnyUrl) or (isinstance(value, str) and name.endswith("url") and value):
            yield path, str(value)


def url_problem(where: str, url: str, *, production: bool) -> str | None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and is_loopback_host(parts.hostname) and not production:
        return None
    allowed = "https" if production else "https (plain http only to a loopback host outside production)"
    return f"{where}: must be an {allowed} URL"


def duplicates(what: str, owners: Iterable[tuple[str, str]]) -> list[str]:
    """`owners` is (value, store_id); a value may belong to one store only. Values are never echoed."""
    by_value: dict[str, list[str]] = {}
    for value, store_id in owners:
        by_value.setdefault(value, []).append(store_id)
    return [
        f"stores {', '.join(repr(s) for s in stores)} share the same {what}"
        if len(set(stores)) > 1
        else f"store {stores[0]!r} uses the same {what} twice"
        for stores in by_value.values()
        if len(stores) > 1
    ]
