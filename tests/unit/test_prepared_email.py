"""prepare_email writes what the email package's generator wrote for build_email, byte for byte, and the same
envelope addresses; whatever it cannot write plainly goes through the generator itself."""

from __future__ import annotations

import time
from email.utils import parseaddr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.adapters.smtp import _WIRE, Envelope, build_email, prepare_email
from services.notifier.adapters.templates import RenderedMessage

BOUNDARY = "=_0123456789abcdef0123456789abcdef"
DATE = "Mon, 30 Nov 2026 09:14:18 GMT"

# Header values and bodies as they come: mostly plain ASCII, sometimes names like "Zoë", runs of white space,
# line breaks, long lines.
_text = st.text(
    st.sampled_from([*"abcxyz ABC-.,!?'\"<>@:;=()[]_/", "\t", "\n", "\r", "ë", "ß", "→", "😀"]), max_size=60
)
_long = st.builds(lambda s, n: s * n, st.text("ab c", min_size=1, max_size=3), st.integers(1, 500))


def _as_generated(envelope: Envelope, rendered: RenderedMessage) -> tuple[str, str, bytes]:
    message = build_email(envelope, rendered, boundary=BOUNDARY, date=DATE)
    return parseaddr(str(message["From"]))[1], str(message["To"]), message.as_bytes(policy=_WIRE)


@settings(max_examples=300, deadline=None)
@given(
    from_name=_text,
    subject=st.one_of(_text, _long),
    text=st.one_of(_text, _long),
    html=st.one_of(_text, _long),
    unsubscribe=st.one_of(st.none(), _text, _long),
)
def test_the_same_bytes_and_addresses_as_the_email_package(
    from_name: str, subject: str, text: str, html: str, unsubscribe: str | None
) -> None:
    headers = (("List-Unsubscribe", f"<https://n.test/u/{unsubscribe}>"),) if unsubscribe is not None else ()
    envelope = Envelope("shop@demo.test", from_name, "ann@example.com", headers, "<m-1@demo.test>")
    rendered = RenderedMessage(subject, text, html)
    try:
        expected = _as_generated(envelope, rendered)
    except Exception as exc:  # the generator refuses it (a header with a line break): so must we
        with pytest.raises(type(exc)):
            prepare_email(envelope, rendered, boundary=BOUNDARY, date=DATE)
        return
    prepared = prepare_email(envelope, rendered, boundary=BOUNDARY, date=DATE)
    assert (prepared.sender, prepared.recipient, prepared.data) == expected


def test_a_typical_welcome_is_written_directly_and_several_times_cheaper() -> None:
    envelope = Envelope(
        "hello@demo-store.example",
        "Demo Store",
        "ines@example.com",
        (
            ("List-Unsubscribe", "<https://notify.test/u/abc>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ),
        "<welcome-1@demo-store.example>",
    )
    rendered = RenderedMessage("Thank you for your order, Ines!", "Hi Ines,\n" * 60, "<p>Hi Ines</p>\n" * 200)
    assert (
        prepare_email(envelope, rendered, boundary=BOUNDARY, date=DATE).data
        == _as_generated(envelope, rendered)[2]
    )

    def cost(build: object) -> float:
        began = time.process_time()
        for _ in range(200):
            build()  # type: ignore[operator]
        return time.process_time() - began

    generated = cost(lambda: build_email(envelope, rendered).as_bytes(policy=_WIRE))
    direct = cost(lambda: prepare_email(envelope, rendered))
    assert direct * 3 < generated
