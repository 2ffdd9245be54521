"""Normalisation and hashing of exported members, checked against the platforms' documented examples.

- Google Ads Customer Match: the hashed data template's first row is the email `test@gmail.com`
  (trimmed, lower-cased), whose SHA-256 is 87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674;
  phone numbers are hashed in E.164 with the '+'.
- Meta Custom Audiences ("customer information parameters", customer list formatting guide): email trimmed
  and lower-cased; phone "digits only, with country code, no leading zeros", e.g. "+1 (650) 555-1212" ->
  "16505551212", "+44 844 412 4653" -> "448444124653", "1-234-567-8910" -> "12345678910" (US).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.adapters.audience_export import csv_safe, google_row, meta_row, people_row
from services.notifier.adapters.audience_sync import encode_sync_body, sign
from services.notifier.domain.audiences import (
    CustomerFacts,
    exported_contact,
    meta_phone,
    normalise_email,
    normalise_phone,
    region_code,
    sha256_hex,
)
from shared.funnel import Health, LoyaltyStage
from shared.workers import backoff

GOOGLE_TEMPLATE_EMAIL_SHA256 = "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"
# SHA-256 of the normalised example phone "+1 (650) 555-1212", as each platform normalises it.
META_PHONE_SHA256 = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"  # "16505551212"
GOOGLE_PHONE_SHA256 = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"  # "+16505551212"


@pytest.mark.parametrize("raw", ["test@gmail.com", "  Test@Gmail.com ", "TEST@GMAIL.COM\n"])
def test_email_is_trimmed_lowercased_and_hashed_as_google_documents(raw: str) -> None:
    normalised = normalise_email(raw)
    assert normalised == "test@gmail.com"
    assert sha256_hex(normalised) == GOOGLE_TEMPLATE_EMAIL_SHA256


@pytest.mark.parametrize("raw", [None, "", "   ", "no-at-sign", "@example.com", "ines@"])
def test_something_that_is_no_email_is_left_out(raw: str | None) -> None:
    assert normalise_email(raw) is None


@pytest.mark.parametrize(
    ("raw", "country", "e164"),
    [
        ("+1 (650) 555-1212", None, "+16505551212"),
        ("+44 844 412 4653", None, "+448444124653"),
        ("1-234-567-8910", "US", "+12345678910"),
        ("12345678910", "United States", "+12345678910"),
        ("(555) 010-1234", "United States", "+15550101234"),
        ("+49 151 1234 5678", "Germany", "+4915112345678"),
        ("0151 12345678", "DE", "+4915112345678"),
        ("0049 151 12345678", "Deutschland", "+4915112345678"),
        ("06 12 34 56 78", "France", "+33612345678"),
    ],
)
def test_phones_become_e164_with_the_customers_country(raw: str, country: str | None, e164: str) -> None:
    assert normalise_phone(raw, country) == e164


def test_meta_and_google_hash_the_documented_phone_example_differently() -> None:
    e164 = normalise_phone("+1 (650) 555-1212")
    assert e164 == "+16505551212"
    assert meta_phone(e164) == "16505551212"
    assert sha256_hex(meta_phone(e164)) == META_PHONE_SHA256
    assert sha256_hex(e164) == GOOGLE_PHONE_SHA256


def test_the_locale_places_a_number_when_the_country_is_missing() -> None:
    assert normalise_phone("07700 900123", None, "en-GB") == "+447700900123"
    assert normalise_phone("07700 900123", None, "en") is None


@pytest.mark.parametrize(
    ("raw", "country"), [("555 0101", None), ("not a phone", "US"), ("+1 23", None), ("", "US")]
)
def test_a_phone_that_cannot_be_placed_is_not_hashed_wrong(raw: str, country: str | None) -> None:
    assert normalise_phone(raw, country) is None


@pytest.mark.parametrize(
    ("country", "code"),
    [("DE", "DE"), ("de", "DE"), ("Germany", "DE"), ("united kingdom", "GB"), ("UK", "GB"), ("USA", "US")],
)
def test_countries_are_read_as_codes_or_names(country: str, code: str) -> None:
    assert region_code(country) == code


def test_export_rows_per_format() -> None:
    facts = CustomerFacts(
        customer_id="c-1",
        email=" Test@Gmail.com ",
        phone="(650) 555-1212",
        accepts_marketing=True,
        first_name="Ines",
        last_name="=HYPERLINK(1)",
        country="United States",
        stage=LoyaltyStage.LOYAL,
        health=Health.ACTIVE,
    )
    contact = exported_contact(facts)
    assert contact is not None
    assert meta_row(contact) == [GOOGLE_TEMPLATE_EMAIL_SHA256, META_PHONE_SHA256]
    assert google_row(contact) == [GOOGLE_TEMPLATE_EMAIL_SHA256, GOOGLE_PHONE_SHA256]
    assert contact.as_json() == {
        "email_sha256": GOOGLE_TEMPLATE_EMAIL_SHA256,
        "phone_sha256": META_PHONE_SHA256,
        "phone_e164_sha256": GOOGLE_PHONE_SHA256,
    }
    assert people_row(facts) == [
        "c-1",
        "test@gmail.com",
        "+16505551212",
        "Ines",
        "'=HYPERLINK(1)",
        "United States",
        "loyal",
        "active",
    ]


def test_email_only_members_have_an_empty_phone_cell() -> None:
    contact = exported_contact(CustomerFacts(customer_id="c", email="a@b.co", accepts_marketing=True))
    assert contact is not None
    assert meta_row(contact) == [hashlib.sha256(b"a@b.co").hexdigest(), ""]
    assert contact.as_json() == {"email_sha256": hashlib.sha256(b"a@b.co").hexdigest()}


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx"])
def test_cells_a_spreadsheet_would_run_are_quoted(value: str) -> None:
    assert csv_safe(value) == "'" + value
    assert csv_safe("Ines") == "Ines"


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    # RFC 4231, test case 2.
    assert sign("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_the_sync_body_is_stable_json() -> None:
    body = encode_sync_body(
        batch_id="b-1",
        store_id="demo",
        audience="win_back",
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
        added=[{"email_sha256": "aa"}],
        removed=[],
    )
    assert body == (
        b'{"added":[{"email_sha256":"aa"}],"audience":"win_back","batch_id":"b-1",'
        b'"created_at":"2026-11-24T00:00:00+00:00","removed":[],"store_id":"demo"}'
    )


def test_retries_back_off_exponentially_up_to_a_cap() -> None:
    first, cap = timedelta(seconds=30), timedelta(hours=1)
    assert [backoff(n, first=first, cap=cap).total_seconds() for n in (1, 2, 3, 8, 50)] == [
        30,
        60,
        120,
        3600,
        3600,
    ]
