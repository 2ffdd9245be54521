"""Retargeting audiences: who belongs (pure rules of a customer's facts and `now`), what a membership row
becomes when that changes, and how members are matched by the ad platforms (consent, normalisation and
hashing). Reading the customers rows and the export file formats are adapters' work
(adapters/audience_rows.py, adapters/audience_export.py).

Membership is decided per customer, incrementally, whenever the notifier learns something about them. A
time-based criterion (`cart_abandoned_within`, `ordered_within`, `no_order_within`) holds over an interval of
time, so each decision also says when time alone would change it; the caller stores that instant and
re-evaluates then, instead of rescanning every customer.

Hashing follows the platforms' documented normalisation:
- email, for Meta (Custom Audiences, `EMAIL`) and Google (Customer Match, `Email`): leading and trailing
  whitespace trimmed, lower-cased, then SHA-256 as lowercase hex.
- phone for Meta (`PHONE`): digits only, with the country code, no '+' and no leading zeros
  ("+1 (650) 555-1212" -> "16505551212"); for Google (`Phone`): E.164 with the '+' ("+16505551212").
  A number given without its country code is completed with the customer's country (or the region of
  their locale); one that cannot be placed is left out rather than hashed wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import phonenumbers

from services.notifier.domain.country_names import REGIONS_BY_NAME
from shared.audience_rules import AudienceDefinition
from shared.funnel import Health, LoyaltyStage, SurveyLevel


@dataclass(frozen=True)
class CustomerFacts:
    """What the notifier knows of a customer, as far as audiences care."""

    customer_id: str
    email: str | None = None
    phone: str | None = None
    accepts_marketing: bool | None = None
    unsubscribed_at: datetime | None = None
    first_name: str | None = None
    last_name: str | None = None
    country: str | None = None
    locale: str | None = None
    stage: LoyaltyStage | None = None
    health: Health | None = None
    survey_level: SurveyLevel = SurveyLevel.NONE
    orders_count: int = 0
    total_spent: Decimal = Decimal("0")
    categories: frozenset[str] = frozenset()  # casefolded
    products: frozenset[str] = frozenset()  # casefolded product ids
    last_order_at: datetime | None = None
    last_cart_abandoned_at: datetime | None = None

    @property
    def erased(self) -> bool:
        # Erasure clears the contact details and the consent answer; without them the customer can be
        # neither reached nor matched, so they belong to no audience any more.
        return self.email is None and self.phone is None and self.accepts_marketing is None

    @property
    def consents_to_marketing(self) -> bool:
        return self.accepts_marketing is True and self.unsubscribed_at is None


@dataclass(frozen=True)
class Membership:
    member: bool
    # When time alone changes the answer: the end of a member's window, or the start of a non-member's.
    changes_at: datetime | None = None


NOT_A_MEMBER = Membership(member=False)


def evaluate(definition: AudienceDefinition, facts: CustomerFacts, now: datetime) -> Membership:
    if facts.erased or not _static_criteria_hold(definition, facts):
        return NOT_A_MEMBER
    window = _time_window(definition, facts)
    if window is None:
        return NOT_A_MEMBER
    start, end = window
    if start is not None and end is not None and end <= start:
        return NOT_A_MEMBER
    if start is not None and now < start:
        return Membership(member=False, changes_at=start)
    if end is None:
        return Membership(member=True)
    if now < end:
        return Membership(member=True, changes_at=end)
    return NOT_A_MEMBER


def evaluate_all(
    definitions: Mapping[str, AudienceDefinition], facts: CustomerFacts, now: datetime
) -> dict[str, Membership]:
    return {name: evaluate(definition, facts, now) for name, definition in definitions.items()}


def next_change(memberships: Mapping[str, Membership]) -> datetime | None:
    """The earliest instant at which time alone changes any of these memberships."""
    return min((m.changes_at for m in memberships.values() if m.changes_at is not None), default=None)


def _static_criteria_hold(d: AudienceDefinition, f: CustomerFacts) -> bool:
    if d.stages and f.stage not in d.stages:
        return False
    if d.health and f.health not in d.health:
        return False
    if d.min_survey_level is not None and f.survey_level.rank < d.min_survey_level.rank:
        return False
    if d.categories and not (d.categories & f.categories):
        return False
    if d.products and not (d.products & f.products):
        return False
    if d.countries and not _country_matches(d.countries, f.country):
        return False
    if d.min_orders is not None and f.orders_count < d.min_orders:
        return False
    if d.max_orders is not None and f.orders_count > d.max_orders:
        return False
    if d.min_total_spent is not None and f.total_spent < d.min_total_spent:
        return False
    if d.max_total_spent is not None and f.total_spent > d.max_total_spent:
        return False
    if d.cart_abandoned_within is not None:
        abandoned, ordered = f.last_cart_abandoned_at, f.last_order_at
        if abandoned is None or (ordered is not None and ordered >= abandoned):
            return False
    return True


def _time_window(d: AudienceDefinition, f: CustomerFacts) -> tuple[datetime | None, datetime | None] | None:
    """The interval [start, end) in which every time-based criterion holds (None: since always / forever),
    or None when one can never hold (e.g. `ordered_within` for a customer who never ordered)."""
    start: datetime | None = None
    end: datetime | None = None

    def narrow(opens: datetime, closes: datetime | None) -> None:
        nonlocal start, end
        start = opens if start is None else max(start, opens)
        if closes is not None:
            end = closes if end is None else min(end, closes)

    if d.ordered_within is not None or d.no_order_within is not None:
        if f.last_order_at is None:
            return None
        if d.ordered_within is not None:
            narrow(f.last_order_at, f.last_order_at + d.ordered_within)
        if d.no_order_within is not None:
            narrow(f.last_order_at + d.no_order_within, None)
    if d.cart_abandoned_within is not None:
        if f.last_cart_abandoned_at is None:
            return None
        narrow(f.last_cart_abandoned_at, f.last_cart_abandoned_at + d.cart_abandoned_within)
    return start, end


# --- What a membership row becomes -------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    """A customer's row of one audience as stored: membership, and what the sync endpoint must hear.

    `contact`: the hashes the member may be exported with (None: not exportable); `synced_contact`: what the
    endpoint was last told; `in_flight`: a batch telling it something is on its way."""

    member: bool
    joined_at: datetime | None
    expires_at: datetime | None
    contact: Mapping[str, str] | None
    sync_pending: bool
    synced_contact: Mapping[str, str] | None = None
    in_flight: bool = False

    def same_state(self, other: MemberRow) -> bool:
        """Equal in what membership decides (the sync bookkeeping is the sync worker's)."""
        return (self.member, self.joined_at, self.expires_at, self.contact, self.sync_pending) == (
            other.member,
            other.joined_at,
            other.expires_at,
            other.contact,
            other.sync_pending,
        )


def next_member_row(
    membership: Membership,
    contact: Mapping[str, str] | None,
    current: MemberRow | None,
    *,
    sync_on: bool,
    now: datetime,
) -> MemberRow | None:
    """The row's new state, or None when no row is needed at all.

    A former member stays, unexported, until the sync endpoint has heard of the removal; a member keeps the
    time they joined; while a batch is in flight, its completion decides what is still pending."""
    in_flight = current is not None and current.in_flight
    synced = current.synced_contact if current is not None else None
    member, expires_at = membership.member, membership.changes_at
    if not member:
        if not sync_on or (synced is None and not in_flight):
            return None
        contact, expires_at = None, None
    joined_at = (current.joined_at if current is not None and current.member else now) if member else None
    return MemberRow(
        member=member,
        joined_at=joined_at,
        expires_at=expires_at if member else None,
        contact=contact,
        sync_pending=sync_on and not in_flight and contact != synced,
        synced_contact=synced,
        in_flight=in_flight,
    )


@dataclass(frozen=True)
class MembershipChanges:
    """One customer's changes: rows to write (by audience), rows to delete, and when to look again."""

    upserts: dict[str, MemberRow]
    removals: tuple[str, ...]
    reevaluate_at: datetime | None


def membership_changes(
    definitions: Mapping[str, AudienceDefinition],
    facts: CustomerFacts | None,
    current: Mapping[str, MemberRow],
    *,
    sync_on: bool,
    now: datetime,
) -> MembershipChanges:
    """A customer's audience rows after their facts changed (None: the customer is gone, erased or unknown).

    Audiences no longer defined are left like any other: their members leave."""
    memberships = evaluate_all(definitions, facts, now) if facts is not None else {}
    contact = exported_contact(facts) if facts is not None else None
    contact_json = contact.as_json() if contact is not None else None
    upserts: dict[str, MemberRow] = {}
    removals: list[str] = []
    for audience in sorted(definitions.keys() | current.keys()):
        row = current.get(audience)
        wanted = next_member_row(
            memberships.get(audience, NOT_A_MEMBER), contact_json, row, sync_on=sync_on, now=now
        )
        if wanted is None:
            if row is not None:
                removals.append(audience)
        elif row is None or not wanted.same_state(row):
            upserts[audience] = wanted
    return MembershipChanges(upserts, tuple(removals), next_change(memberships))


# --- Consent, normalisation and hashing for exports ---------------------------------------------------------


def normalise_email(raw: str | None) -> str | None:
    if raw is None:
        return None
    email = raw.strip().lower()
    local, _, domain = email.partition("@")
    return email if local and domain else None


def normalise_phone(raw: str | None, country: str | None = None, locale: str | None = None) -> str | None:
    """E.164 ('+' and digits), or None when the number cannot be placed in a country or is not possible."""
    if raw is None or not raw.strip():
        return None
    region = region_code(country) or _locale_region(locale)
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    # Possible, not valid: a number from a range not yet in libphonenumber's data still matches on the
    # platforms, and the storefront already checked the customer can receive at it.
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def meta_phone(e164: str) -> str:
    """Meta wants digits only with the country code: E.164 without its '+'."""
    return e164.removeprefix("+")


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class HashedContact:
    """What the ad platforms receive of a customer: nothing but these hashes."""

    email_sha256: str | None
    phone_sha256: str | None  # Meta: SHA-256 of the digits with country code
    phone_e164_sha256: str | None  # Google: SHA-256 of E.164 with '+'

    def as_json(self) -> dict[str, str]:
        return {
            key: value
            for key, value in (
                ("email_sha256", self.email_sha256),
                ("phone_sha256", self.phone_sha256),
                ("phone_e164_sha256", self.phone_e164_sha256),
            )
            if value is not None
        }


def hashed_contact(facts: CustomerFacts) -> HashedContact | None:
    email = normalise_email(facts.email)
    phone = normalise_phone(facts.phone, facts.country, facts.locale)
    if email is None and phone is None:
        return None
    return HashedContact(
        email_sha256=sha256_hex(email) if email else None,
        phone_sha256=sha256_hex(meta_phone(phone)) if phone else None,
        phone_e164_sha256=sha256_hex(phone) if phone else None,
    )


def exported_contact(facts: CustomerFacts) -> HashedContact | None:
    """The hashes a member may be exported with: only with marketing consent, and only if reachable."""
    if not facts.consents_to_marketing:
        return None
    return hashed_contact(facts)


# --- Countries ----------------------------------------------------------------------------------------------

# Storefronts send a country as an ISO code or as a name; these are the names libphonenumber does not use.
_COUNTRY_ALIASES = {
    "usa": "US",
    "united states of america": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "deutschland": "DE",
    "czechia": "CZ",
    "korea": "KR",
    "republic of korea": "KR",
    "russian federation": "RU",
    "holland": "NL",
    "the netherlands": "NL",
    "ivory coast": "CI",
    "cote d'ivoire": "CI",
    "türkiye": "TR",
    "turkiye": "TR",
}


def region_code(country: str | None) -> str | None:
    """ISO 3166 alpha-2 code of a country given as a code or an English name; None if unknown."""
    if not country or not country.strip():
        return None
    text = country.strip()
    if len(text) == 2 and text.upper() in phonenumbers.SUPPORTED_REGIONS:
        return text.upper()
    folded = text.casefold()
    return _COUNTRY_ALIASES.get(folded) or REGIONS_BY_NAME.get(folded)


def _locale_region(locale: str | None) -> str | None:
    """'de-DE', 'en_GB' -> the region part, when it is one libphonenumber knows."""
    if not locale:
        return None
    parts = locale.replace("_", "-").split("-")
    if len(parts) < 2:
        return None
    region = parts[-1].upper()
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def _country_matches(wanted: frozenset[str], country: str | None) -> bool:
    if country is None:
        return False
    code = region_code(country)
    for candidate in wanted:
        if code is not None and region_code(candidate) == code:
            return True
        if candidate.strip().casefold() == country.strip().casefold():
            return True
    return False
