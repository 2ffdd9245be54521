"""Which collations shared.db_collation counts as compared byte by byte, and what it says of the others."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from shared.db_collation import Collation, report_collation


@pytest.mark.parametrize(
    ("collate", "provider", "locale", "expected"),
    [
        # libc: PostgreSQL compares with memcmp for C and POSIX only (pg_locale.c, lc_collate_is_c).
        ("C", "c", None, Collation("C", "libc")),
        ("POSIX", "c", None, Collation("POSIX", "libc")),
        ("en_US.utf8", "c", None, Collation("en_US.utf8", "libc")),
        ("C.UTF-8", "c", None, Collation("C.UTF-8", "libc")),
        # PostgreSQL 14 and before: no provider column, every database libc's.
        ("C", None, None, Collation("C", "libc")),
        # ICU: datcollate is still set (to libc's locale for other uses); ICU's locale is what compares.
        ("C", "i", "en-US", Collation("en-US", "icu")),
        ("C", "i", "und", Collation("und", "icu")),
        # PostgreSQL 17's builtin provider: datlocale names its locale.
        ("C", "b", "C.UTF-8", Collation("C.UTF-8", "builtin")),
        ("en_US.utf8", "b", "C", Collation("C", "builtin")),
    ],
)
def test_the_collation_is_named_by_the_provider_that_compares(
    collate: str, provider: str | None, locale: str | None, expected: Collation
) -> None:
    assert Collation.of(collate, provider, locale) == expected


@pytest.mark.parametrize(
    ("collation", "compares_bytes"),
    [
        (Collation("C", "libc"), True),
        (Collation("POSIX", "libc"), True),
        (Collation("C.UTF-8", "builtin"), True),
        (Collation("C", "builtin"), True),
        (Collation("en_US.utf8", "libc"), False),
        # Code point order too, but compared through strcoll, not memcmp.
        (Collation("C.UTF-8", "libc"), False),
        (Collation("en-US", "icu"), False),
        # ICU has no byte-wise locale: its "C" is a root-like collation compared by ICU.
        (Collation("C", "icu"), False),
        (Collation("C", "unknown (x)"), False),
    ],
)
def test_only_c_and_posix_and_the_builtin_locales_compare_bytes(
    collation: Collation, compares_bytes: bool
) -> None:
    assert collation.compares_bytes is compares_bytes


def _gauge(collation: str, provider: str, compares_bytes: str) -> float | None:
    labels = {"collation": collation, "provider": provider, "compares_bytes": compares_bytes}
    return REGISTRY.get_sample_value("database_collation_info", labels)


def test_a_database_not_in_c_gets_a_warning_naming_its_collation_and_a_metric_to_alert_on() -> None:
    with capture_logs() as logs:
        report_collation(Collation("en_US.utf8", "libc"))
    [entry] = logs
    assert entry["log_level"] == "warning"
    assert entry["event"] == "database_collation_not_c"
    assert (entry["collation"], entry["provider"]) == ("en_US.utf8", "libc")
    assert "C locale" in entry["remedy"]
    assert _gauge("en_US.utf8", "libc", "false") == 1.0


def test_a_database_in_c_is_reported_without_a_warning() -> None:
    with capture_logs() as logs:
        report_collation(Collation("C", "libc"))
    assert [(entry["log_level"], entry["event"]) for entry in logs] == [("info", "database_collation")]
    assert _gauge("C", "libc", "true") == 1.0
