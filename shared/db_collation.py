"""Which collation the database compares text with, said at start: a log line and `database_collation_info`.

Every key of ours (store, identifier, customer, event and order ids) is text in a B-tree. In the C (or POSIX)
collation PostgreSQL compares it byte by byte; in any other it compares through the locale's rules (libc's
strcoll or ICU), which on the benchmark's segmenter phase took about 1.5x PostgreSQL's CPU an event and
halved pgbench's limit (bench/README.md, sixty-ninth round). The local stack, the tests, the benchmark and
docker compose create the database in C, but a database created elsewhere (a managed PostgreSQL, a compose
volume made before the compose file said so) may have another: the services run on it correctly, only
slower, and with text ordered by the locale's rules. Nothing refuses it; an SRE is told, by a warning naming
the collation and by a metric to alert on.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.logging import get_logger
from shared.transient import is_transient
from shared.workers import sleep_backoff

log = get_logger(__name__)

COLLATION = Gauge(
    "database_collation_info",
    "1 for the collation of the service's database; compares_bytes is false when text keys are compared by "
    "a locale's rules instead of byte by byte (the C or POSIX collation)",
    ["collation", "provider", "compares_bytes"],
)

# pg_database.datlocprovider (PostgreSQL 15 and later; before it, every database was libc's).
_PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}

# The locales PostgreSQL compares with memcmp: libc's C and POSIX (PostgreSQL's own test, lc_collate_is_c),
# and the builtin provider's (PostgreSQL 17), whose C.UTF-8 orders by code point, which in UTF-8 is byte
# order. libc's C.UTF-8 orders the same way but is still compared through strcoll: not counted.
_BYTEWISE = {"libc": frozenset({"C", "POSIX"}), "builtin": frozenset({"C", "C.UTF-8"})}

# to_jsonb of the row, not its columns: which columns exist depends on the version (datlocprovider since 15;
# ICU's locale in daticulocale in 15 and 16, datlocale since 17), and naming a missing one is an error.
_READ = text(
    "SELECT r->>'datcollate', r->>'datlocprovider', coalesce(r->>'datlocale', r->>'daticulocale')"
    " FROM (SELECT to_jsonb(d) AS r FROM pg_database d WHERE d.datname = current_database()) AS this"
)


@dataclass(frozen=True)
class Collation:
    name: str
    provider: str

    @property
    def compares_bytes(self) -> bool:
        return self.name in _BYTEWISE.get(self.provider, frozenset())

    @classmethod
    def of(cls, collate: str, provider: str | None, locale: str | None) -> Collation:
        """From pg_database's datcollate, datlocprovider (None before 15) and the provider's own locale (ICU's
        or the builtin's; None for libc, which uses datcollate)."""
        named = _PROVIDERS.get(provider or "c", f"unknown ({provider})")
        return cls(name=locale if named != "libc" and locale else collate, provider=named)


async def read_collation(engine: AsyncEngine) -> Collation:
    async with engine.connect() as conn:
        collate, provider, locale = (await conn.execute(_READ)).one()
    return Collation.of(collate, provider, locale)


def report_collation(collation: Collation) -> None:
    COLLATION.labels(collation.name, collation.provider, str(collation.compares_bytes).lower()).set(1)
    if collation.compares_bytes:
        log.info("database_collation", collation=collation.name, provider=collation.provider)
        return
    log.warning(
        "database_collation_not_c",
        collation=collation.name,
        provider=collation.provider,
        effect="text keys compared by the locale's rules: slower than in C, and text ordered by that locale",
        remedy="restore a dump into a database created in the C locale (README: Running with docker compose)",
    )


async def report_database_collation(engine: AsyncEngine, *, wait_for_outages: bool) -> None:
    """Read and report the collation. `wait_for_outages`: retry while the database is away (a service's
    worker: its database may start after it), else one try (`migrate`, which has just reached it). What it
    tells is advice: a database that will not say is logged, and stops nothing."""
    attempt = 0
    while True:
        try:
            collation = await read_collation(engine)
        except Exception as exc:
            if wait_for_outages and is_transient(exc):
                await sleep_backoff(attempt)
                attempt += 1
                continue
            log.warning("database_collation_unread", error=type(exc).__name__)
            return
        report_collation(collation)
        return
