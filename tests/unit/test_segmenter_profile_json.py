"""The profile document the segmenter writes (adapters/repository.py, msgspec) is read back as the very same
profile, and written again as the same text: the same strings, the same number texts (1.0 and 1 are
different jsonb), the same offsets. (Until the profile became a msgspec Struct, the oracle here was
pydantic's `model_dump_json()` of the same profile; the replay check still compares the tables byte for byte
with the state before issue 14's second round.)"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.segmenter.adapters.repository import profiles_write
from services.segmenter.domain.funnel import new_profile
from services.segmenter.domain.profile import OrderFact, ProductFact, Profile
from tests.funnel_mix import decisions_of_the_mix
from tests.strategies import INSTANTS, MONEY


def _values(document: str | bytes) -> Any:
    # Numbers kept as their text: 1.0 and 1 are different jsonb.
    return json.loads(document, parse_float=str, parse_int=lambda text: f"int:{text}")


def _document(profile: Profile) -> bytes:
    """The profile's document as the profiles' upsert sends it: the blob of a write of this profile alone."""
    write = profiles_write([profile])
    assert write is not None
    return bytes(write.values["facts"])


def assert_same_document(profile: Profile) -> None:
    document = _document(profile)
    loaded = Profile.model_validate_json(document)
    assert loaded == profile
    assert _values(_document(loaded)) == _values(document)
    assert _document(loaded) == document


def test_the_profiles_of_the_mix_are_written_the_same() -> None:
    held: dict[tuple[str, str], Profile] = {}
    for decision in decisions_of_the_mix(seed=5, run="profile-json"):
        profile = decision.profile
        held[(profile.store_id, profile.customer_id)] = profile
        assert_same_document(profile)
    assert any(p.orders for p in held.values())
    assert any(p.transitions for p in held.values())


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    name=TEXT, city=st.none() | TEXT, at=INSTANTS, total=MONEY, refunded=MONEY, price=st.none() | MONEY,
    birthday=st.none() | st.dates(), consent=st.none() | st.booleans(),
    stamps=st.dictionaries(TEXT, INSTANTS),
)  # fmt: skip
def test_any_values_are_written_the_same(
    name: str,
    city: str | None,
    at: datetime,
    total: Decimal,
    refunded: Decimal,
    price: Decimal | None,
    birthday: Any,
    consent: bool | None,
    stamps: dict[str, datetime],
) -> None:
    order = OrderFact(
        order_id=name or "o",
        placed_at=at,
        total=total,
        refunded=refunded,
        currency="EUR",
        products=(ProductFact(product_id="p", title=name, price=price),),
    )
    profile = new_profile("demo", name).model_copy(
        update={
            "first_name": name,
            "city": city,
            "birthday": birthday,
            "accepts_marketing": consent,
            "contact_at": stamps,
            "orders": (order,),
            "identifiers": (f"email:{name}",),
        }
    )
    assert_same_document(profile)
