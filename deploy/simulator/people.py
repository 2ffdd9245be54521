"""Who shops at the simulated store: names, places, phones, birthdays and consent. Pure, from a given rng.

Emails use the reserved example.com domain and carry the seed and the customer's number, so two runs with
different seeds never share a customer, and the same seed always names the same people.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from deploy.simulator.catalog import pick_favourite_category
from deploy.simulator.personas import Persona


@dataclass(frozen=True)
class Place:
    city: str
    country: str
    country_code: str
    timezone: str
    locale: str
    phone_prefix: str  # E.164 country calling code
    phone_digits: int  # digits of the national number
    names: str  # key into NAMES
    weight: int


PLACES: tuple[Place, ...] = (
    Place("New York", "United States", "US", "America/New_York", "en-US", "1", 10, "en", 9),
    Place("Austin", "United States", "US", "America/Chicago", "en-US", "1", 10, "en", 5),
    Place("Seattle", "United States", "US", "America/Los_Angeles", "en-US", "1", 10, "en", 5),
    Place("Toronto", "Canada", "CA", "America/Toronto", "en-CA", "1", 10, "en", 4),
    Place("Montréal", "Canada", "CA", "America/Toronto", "fr-CA", "1", 10, "fr", 2),
    Place("London", "United Kingdom", "GB", "Europe/London", "en-GB", "44", 10, "en", 7),
    Place("Manchester", "United Kingdom", "GB", "Europe/London", "en-GB", "44", 10, "en", 3),
    Place("Dublin", "Ireland", "IE", "Europe/Dublin", "en-IE", "353", 9, "en", 2),
    Place("Berlin", "Germany", "DE", "Europe/Berlin", "de-DE", "49", 11, "de", 6),
    Place("München", "Germany", "DE", "Europe/Berlin", "de-DE", "49", 11, "de", 3),
    Place("Wien", "Austria", "AT", "Europe/Vienna", "de-AT", "43", 10, "de", 2),
    Place("Paris", "France", "FR", "Europe/Paris", "fr-FR", "33", 9, "fr", 5),
    Place("Lyon", "France", "FR", "Europe/Paris", "fr-FR", "33", 9, "fr", 2),
    Place("Madrid", "Spain", "ES", "Europe/Madrid", "es-ES", "34", 9, "es", 4),
    Place("Barcelona", "Spain", "ES", "Europe/Madrid", "es-ES", "34", 9, "es", 3),
    Place("Lisboa", "Portugal", "PT", "Europe/Lisbon", "pt-PT", "351", 9, "pt", 2),
    Place("São Paulo", "Brazil", "BR", "America/Sao_Paulo", "pt-BR", "55", 11, "pt", 3),
    Place("Milano", "Italy", "IT", "Europe/Rome", "it-IT", "39", 10, "it", 3),
    Place("Amsterdam", "Netherlands", "NL", "Europe/Amsterdam", "nl-NL", "31", 9, "nl", 3),
    Place("Stockholm", "Sweden", "SE", "Europe/Stockholm", "sv-SE", "46", 9, "sv", 2),
    Place("Warszawa", "Poland", "PL", "Europe/Warsaw", "pl-PL", "48", 9, "pl", 2),
    Place("Tokyo", "Japan", "JP", "Asia/Tokyo", "ja-JP", "81", 10, "ja", 3),
    Place("Sydney", "Australia", "AU", "Australia/Sydney", "en-AU", "61", 9, "en", 3),
    Place("Melbourne", "Australia", "AU", "Australia/Melbourne", "en-AU", "61", 9, "en", 2),
)

NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("Olivia", "Liam", "Amelia", "Noah", "Ava", "Oliver", "Isla", "Jack", "Grace", "Ethan", "Chloe",
         "Mason", "Emily", "Lucas", "Harper", "James", "Zoë", "Aiden", "Maya", "Samuel", "Amara", "Priya"),
        ("Smith", "Johnson", "Williams", "Brown", "Taylor", "Walker", "O'Brien", "Nguyen", "Patel", "Garcia",
         "Murphy", "Clarke", "Hughes", "Okafor", "Kim", "Reid", "Campbell", "Foster", "Bennett", "Shaw"),
    ),
    "de": (
        ("Lukas", "Mia", "Leon", "Hannah", "Jonas", "Emma", "Felix", "Lea", "Paul", "Sophie", "Jürgen",
         "Anja", "Tobias", "Katrin", "Maximilian", "Greta"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann",
         "Schäfer", "Koch", "Richter", "Klein", "Wolf"),
    ),
    "fr": (
        ("Chloé", "Louis", "Léa", "Gabriel", "Manon", "Hugo", "Camille", "Arthur", "Inès", "Jules", "Élodie",
         "Théo", "Margaux", "Raphaël"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
         "Lefèvre", "Girard", "Fontaine"),
    ),
    "es": (
        ("Lucía", "Hugo", "Martina", "Mateo", "Sofía", "Pablo", "María", "Álvaro", "Carmen", "Javier",
         "Paula", "Diego"),
        ("García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez",
         "Ortega", "Navarro", "Ruiz"),
    ),
    "pt": (
        ("Ana", "João", "Beatriz", "Miguel", "Mariana", "Gonçalo", "Inês", "Tiago", "Larissa", "Rafael",
         "Camila", "Pedro"),
        ("Silva", "Santos", "Ferreira", "Pereira", "Oliveira", "Costa", "Rodrigues", "Souza", "Almeida",
         "Carvalho"),
    ),
    "it": (
        ("Giulia", "Francesco", "Chiara", "Alessandro", "Sofia", "Lorenzo", "Aurora", "Matteo", "Giorgia",
         "Niccolò"),
        ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco"),
    ),
    "nl": (
        ("Daan", "Emma", "Sem", "Julia", "Lotte", "Bram", "Sanne", "Thijs", "Fleur", "Joost"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "Mulder"),
    ),
    "sv": (
        ("Alice", "William", "Elsa", "Oscar", "Astrid", "Hugo", "Ebba", "Axel", "Saga", "Nils"),
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Lindqvist", "Berg"),
    ),
    "pl": (
        ("Zofia", "Jakub", "Hanna", "Antoni", "Maja", "Szymon", "Julia", "Mikołaj", "Zuzanna", "Łukasz"),
        ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kamiński", "Lewandowski", "Zieliński", "Szymański"),
    ),
    "ja": (
        ("Haruto", "Yui", "Sota", "Hina", "Ren", "Aoi", "Hiro", "Sakura", "Yuto", "Mei"),
        ("Tanaka", "Suzuki", "Takahashi", "Watanabe", "Ito", "Yamamoto", "Nakamura", "Kobayashi", "Sato"),
    ),
}  # fmt: skip

# Shares of the optional facts a storefront knows about its customers.
PHONE_SHARE = 0.5
BIRTHDAY_SHARE = 0.4
MARKETING_CONSENT_SHARE = 0.8
# Customers whose birthday is exactly a week after the history's end: their birthday reminder (7 days
# before, by the default rules) falls due today, so a demo shows one instead of waiting for a real date.
BIRTHDAY_DUE_NOW_SHARE = 0.02
BIRTHDAY_DAYS_BEFORE = 7


@dataclass(frozen=True)
class Shopper:
    """One simulated customer, as the store knows them once they have signed up."""

    number: int  # 0..customers-1 within the run
    customer_id: int  # the store's (Shopify's) numeric customer id
    anonymous_id: str  # analytics.js's visitor id before sign-up
    persona: Persona
    first_name: str
    last_name: str
    email: str
    phone: str | None
    birthday: date | None
    place: Place
    accepts_marketing: bool
    favourite_category: str

    @property
    def user_id(self) -> str:
        """Segment's userId: the store's customer id, so both sources name the same customer."""
        return str(self.customer_id)


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in ".-")).lower()


def customer_id_for(seed: int, number: int) -> int:
    """Seed-derived, so two seeds never collide: seed s owns the block [(s+1) * 10^9, (s+2) * 10^9)."""
    return (seed + 1) * 1_000_000_000 + number


def _phone(rng: random.Random, place: Place) -> str:
    # E.164: "+", the country code, then the national number without its trunk prefix.
    first = str(rng.randint(2, 9))
    rest = "".join(str(rng.randint(0, 9)) for _ in range(place.phone_digits - 1))
    return f"+{place.phone_prefix}{first}{rest}"


def _birthday(rng: random.Random, end: datetime) -> date | None:
    roll = rng.random()
    year = rng.randint(1955, 2005)
    if roll < BIRTHDAY_DUE_NOW_SHARE:
        soon = (end + timedelta(days=BIRTHDAY_DAYS_BEFORE)).date()
        day = 28 if (soon.month, soon.day) == (2, 29) else soon.day
        return date(year, soon.month, day)
    if roll < BIRTHDAY_SHARE:
        return date(year, 1, 1) + timedelta(days=rng.randrange(365))
    return None


def make_shopper(rng: random.Random, *, seed: int, number: int, persona: Persona, end: datetime) -> Shopper:
    place = rng.choices(PLACES, weights=[p.weight for p in PLACES], k=1)[0]
    first_names, last_names = NAMES[place.names]
    first, last = rng.choice(first_names), rng.choice(last_names)
    email = f"{_ascii(first)}.{_ascii(last.replace(' ', ''))}.{number}.s{seed}@example.com"
    return Shopper(
        number=number,
        customer_id=customer_id_for(seed, number),
        anonymous_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        persona=persona,
        first_name=first,
        last_name=last,
        email=email,
        phone=_phone(rng, place) if rng.random() < PHONE_SHARE else None,
        birthday=_birthday(rng, end),
        place=place,
        accepts_marketing=rng.random() < MARKETING_CONSENT_SHARE,
        favourite_category=pick_favourite_category(rng),
    )
