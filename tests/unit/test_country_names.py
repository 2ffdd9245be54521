"""The notifier's table of country names is libphonenumber's own, for the pinned phonenumbers."""

from __future__ import annotations

import phonenumbers
from phonenumbers import geocoder

from services.notifier.domain.audiences import region_code
from services.notifier.domain.country_names import REGIONS_BY_NAME


def test_the_table_is_what_the_geocoder_names_each_supported_region() -> None:
    expected: dict[str, str] = {}
    for region in phonenumbers.SUPPORTED_REGIONS:
        example = phonenumbers.example_number(region)
        if example is not None:
            name = geocoder.country_name_for_number(example, "en")
            if name:
                expected[name.casefold()] = region
    assert expected == REGIONS_BY_NAME


def test_a_country_by_its_english_name_in_any_case() -> None:
    assert region_code("Germany") == "DE"
    assert region_code("  united states ") == "US"
    assert region_code("Atlantis") is None
