"""Web origins a store lets call the Segment API from a browser (CORS), and the look-up of a page's origin.

A store's `allowed_origins` entry is `scheme://host[:port]`, where the port may be `*` (any port) and the host
may start with `*.` (any subdomain, at any depth, not the bare domain). Without a port, the scheme's default
one, as browsers write such an origin without one.

Every CORS preflight, every browser call refused before its write key is known, and every browser call's
page URL asks whether an origin is allowed. Asked entry by entry, the question cost the whole registry's
entries (a regular expression and a parse each once the parse cache was full: 8–11 ms a preflight with 1,000
stores of two origins, on the event loop every webhook and Segment call shares). An `OriginSet` indexes the
entries by scheme and host, so a look-up costs one match of the origin and one probe per label of its host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel, ConfigDict

_ORIGIN = re.compile(
    r"^(?P<scheme>https?)://(?P<host>(\*\.)?[a-z0-9.-]+|\[[0-9a-f:]+\])(:(?P<port>\*|[0-9]{1,5}))?$"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class AllowedOrigin(BaseModel):
    """One entry of a store's `allowed_origins`, parsed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: str
    host: str  # `*.example.com` for any subdomain
    port: str  # `*` for any port

    @classmethod
    def parse(cls, text: str) -> AllowedOrigin:
        match = _ORIGIN.match(text.strip().lower().rstrip("/"))
        if match is None:
            raise ValueError(
                f"{text!r} is not an origin such as https://shop.example.com, http://127.0.0.1:* or "
                "https://*.example.com (no path)"
            )
        scheme = match["scheme"]
        return cls(scheme=scheme, host=match["host"], port=match["port"] or _DEFAULT_PORTS[scheme])


@dataclass(frozen=True)
class OriginSet:
    """Allowed origins by (scheme, host or `*.` pattern) → their ports."""

    ports: dict[tuple[str, str], frozenset[str]]

    @classmethod
    def of(cls, entries: Iterable[AllowedOrigin]) -> OriginSet:
        ports: dict[tuple[str, str], set[str]] = {}
        for entry in entries:
            ports.setdefault((entry.scheme, entry.host), set()).add(entry.port)
        return cls({key: frozenset(found) for key, found in ports.items()})

    @classmethod
    def union(cls, sets: Iterable[OriginSet]) -> OriginSet:
        """What any of these sets allows, in one index (every store's, for a preflight)."""
        ports: dict[tuple[str, str], frozenset[str]] = {}
        for each in sets:
            for key, found in each.ports.items():
                ports[key] = ports.get(key, frozenset()) | found
        return cls(ports)

    def allows(self, origin: str) -> bool:
        """Whether a page of `origin` (a browser's Origin header, or a page URL's origin) is allowed."""
        if not self.ports:
            return False
        match = _ORIGIN.match(origin.lower())
        if match is None or match["host"].startswith("*"):  # a pattern is not an origin
            return False
        scheme, host = match["scheme"], match["host"]
        port = match["port"] or _DEFAULT_PORTS[scheme]
        if self._lists(scheme, host, port):
            return True
        # `*.example.com` allows `a.example.com` and `a.b.example.com`: each dot with a label before it.
        dot = host.find(".", 1)
        while dot != -1:
            if self._lists(scheme, "*" + host[dot:], port):
                return True
            dot = host.find(".", dot + 1)
        return False

    def _lists(self, scheme: str, host: str, port: str) -> bool:
        ports = self.ports.get((scheme, host))
        return ports is not None and (port in ports or "*" in ports)


@cache
def origin_set(entries: tuple[str, ...]) -> OriginSet:
    """A store's `allowed_origins` indexed. Kept per list, not per store object: a copy of a store with other
    origins gets its own, and stores listing the same origins share one; what is kept grows only with the
    lists the registries loaded since start-up."""
    return OriginSet.of(AllowedOrigin.parse(entry) for entry in entries)
