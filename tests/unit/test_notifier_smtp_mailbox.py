"""MAIL FROM and RCPT TO carry what aiosmtplib's mail() and rcpt() would write for the same address, and an
address they refuse is refused the same way."""

from __future__ import annotations

import pytest
from aiosmtplib.email import quote_address
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.adapters.smtp import _SIMPLE_ADDRESS, _mailbox

_atoms = st.text(st.sampled_from([*"abcXYZ019_+-.@<>\"' ()[];:,\\", "ë", "\t"]), max_size=30)


def _as_aiosmtplib_writes(address: str) -> bytes:
    return quote_address(address).encode("ascii")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.from_regex(_SIMPLE_ADDRESS, fullmatch=True), _atoms))
def test_the_same_bytes_or_the_same_refusal(address: str) -> None:
    try:
        expected = _as_aiosmtplib_writes(address)
    except Exception as exc:
        with pytest.raises(type(exc)):
            _mailbox(address)
        return
    assert _mailbox(address) == expected
