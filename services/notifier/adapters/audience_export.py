"""The export files of an audience's members: a people CSV, and the hashed files Meta and Google take."""

from __future__ import annotations

from services.notifier.domain.audiences import CustomerFacts, HashedContact, normalise_email, normalise_phone

PEOPLE_COLUMNS = ("customer_id", "email", "phone", "first_name", "last_name", "country", "stage", "health")
META_COLUMNS = ("EMAIL", "PHONE")  # the Custom Audience schema keys, values hashed
GOOGLE_COLUMNS = ("Email", "Phone")  # the Customer Match file headers, values hashed


def people_row(facts: CustomerFacts) -> list[str]:
    phone = normalise_phone(facts.phone, facts.country, facts.locale) or facts.phone
    return [
        csv_safe(facts.customer_id),
        csv_safe(normalise_email(facts.email) or ""),
        phone if phone and phone.startswith("+") and phone[1:].isdigit() else csv_safe(phone or ""),
        csv_safe(facts.first_name or ""),
        csv_safe(facts.last_name or ""),
        csv_safe(facts.country or ""),
        facts.stage.value if facts.stage else "",
        facts.health.value if facts.health else "",
    ]


def meta_row(contact: HashedContact) -> list[str]:
    return [contact.email_sha256 or "", contact.phone_sha256 or ""]


def google_row(contact: HashedContact) -> list[str]:
    return [contact.email_sha256 or "", contact.phone_e164_sha256 or ""]


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula: names come from storefront forms, anyone can type
    `=HYPERLINK(...)` there (OWASP's CSV injection advice: prefix such cells with a quote)."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value
