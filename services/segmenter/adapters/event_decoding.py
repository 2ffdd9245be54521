"""Storefront events decoded from their Kafka values as the contract's decoder reads them: msgspec's decoder
of shared/storefront_event_structs.py where it gives the contract's values (that module's docstring says
when), the contract's pydantic decoder otherwise.

Compiled by mypyc with the rules (shared/compiled.py): every event the segmenter reads comes through here,
and the checks around msgspec's decoder cost about as much as the decoder itself (1.6 of 3.4 us an event of
the benchmark's mix, in process). Compiled, they run about 1,800 instructions an event fewer than they did
interpreted (callgrind, the whole replay of the mix outside its decisions); most of what is left is C
already: the regex's scan, the set look-ups of new strings, msgspec's attributes.
"""

from __future__ import annotations

from typing import Final

import msgspec

from services.segmenter.domain.event_classes import (
    CART_ABANDONED,
    CART_UPDATED,
    CUSTOM,
    ORDER_PLACED,
    ORDER_REFUNDED,
    PRODUCT_VIEWED,
    SURVEY_ANSWERED,
)
from services.segmenter.domain.instants import decidable
from shared import events
from shared.storefront_event_structs import (
    CURRENCY_SPELLING,
    DECODER,
    EMAIL_SPELLING,
    LOCALE_SPELLING,
    LONG_FRACTION,
    MAX_BRACKETS,
    MONEY_SPELLING,
    STORE_ID_SPELLING,
    CartUpdated,
    OrderPlaced,
    StorefrontEvent,
    from_model,
)

# Each spelling's set of the values seen to match it, held here (emptied in place when full, never replaced):
# a look-up of a seen value, as nearly all are, is then a set's, without reading the set off its spelling.
_STORE_IDS: Final = STORE_ID_SPELLING.seen
_EMAILS: Final = EMAIL_SPELLING.seen
_LOCALES: Final = LOCALE_SPELLING.seen
_AMOUNTS: Final = MONEY_SPELLING.seen
_CURRENCIES: Final = CURRENCY_SPELLING.seen

# What the cheap way reads for every event, as compiled statics: an imported name is a look-up in the
# module's dict at every use (domain/event_classes.py).
_LONG_FRACTION: Final = LONG_FRACTION
_DECODER: Final = DECODER
_is_identified: Final = events.is_identified


def decode_decidable(raw: bytes) -> StorefrontEvent:
    """A message value as the contract reads it, if the segmenter can decide it (domain.instants.decidable);
    the consumer dead-letters it otherwise."""
    return decidable(decode_storefront_event(raw))


def decode_storefront_event(raw: bytes) -> StorefrontEvent:
    """One message value as the contract's decoder reads it; raises pydantic.ValidationError for anything
    that is not a v1 event, with the contract's errors."""
    event = cheap_decode(raw)
    return event if event is not None else from_model(events.decode_event(raw))


def cheap_decode(raw: bytes) -> StorefrontEvent | None:
    """The event when msgspec alone can say what the contract's decoder would (see
    shared/storefront_event_structs.py's docstring); None when that decoder must decide."""
    # The backslash first: one search for one byte (memchr); events without an escape are nearly all. With
    # `find`, not `in`: CPython's `in` on bytes first tries the operand as a byte's value, and formats the
    # TypeError it gets (about 1,000 instructions an event more; callgrind, 10,000 events of the mix).
    if raw.find(b"\\") >= 0 and raw.find(b"\\u") >= 0:
        return None
    if _LONG_FRACTION.search(raw) is not None:
        return None
    # msgspec checks the UTF-8 of the strings it keeps, not of the keys and values it skips; the contract's
    # decoder refuses invalid UTF-8 anywhere.
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError:
            return None
    try:
        event: StorefrontEvent = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    # pydantic's parser refuses a document nested deeper than 200 levels; msgspec reads deeper, and raises
    # RecursionError near Python's own limit (the contract's decoder then has the message, as above). Its
    # classes forbid unknown keys, so only a custom event's properties (any JSON) can nest deeper than they
    # do, and only there are the brackets counted: a document with at most 128 cannot nest deeper than 128.
    # (Counted for every event, they were a quarter of this function's time: 1.3 of 6.1 us an event.)
    if type(event) is CUSTOM and raw.count(b"{") + raw.count(b"[") > MAX_BRACKETS:
        return None
    if not _is_identified(event.customer):  # the rule itself, the contract's
        return None
    if not spelt_as_ingest_writes(event):
        return None
    if type(event) is SURVEY_ANSWERED:
        for answer in event.payload.answers:
            if answer.agree is None and answer.score is None:
                return None
    return event


def spelt_as_ingest_writes(event: StorefrontEvent) -> bool:
    """Whether each field annotated with a spelling (storefront_event_structs._Spelling) matches it: a set
    look-up for a value seen before, which nearly all are, the spelling's pattern for any other."""
    store_id = event.store_id
    if store_id not in _STORE_IDS and not STORE_ID_SPELLING.admits(store_id):
        return False
    customer = event.customer
    value = customer.email
    if value is not None and value not in _EMAILS and not EMAIL_SPELLING.admits(value):
        return False
    value = customer.locale
    if value is not None and value not in _LOCALES and not LOCALE_SPELLING.admits(value):
        return False
    if type(event) is PRODUCT_VIEWED:
        return _amount_spelt(event.payload.product.price_text)
    if type(event) is ORDER_PLACED:
        refunds = event.payload.refunds
        if refunds is not None:
            for refund in refunds:
                if not _amount_spelt(refund.amount_text):
                    return False
        return _sale_spelt(event.payload)
    if type(event) is CART_UPDATED or type(event) is CART_ABANDONED:
        return _sale_spelt(event.payload)
    if type(event) is ORDER_REFUNDED:
        return _money_spelt(event.payload.amount_text, event.payload.currency)
    return True


def _sale_spelt(sale: OrderPlaced | CartUpdated) -> bool:
    for item in sale.line_items:
        if not _amount_spelt(item.price_text):
            return False
    return _money_spelt(sale.total_text, sale.currency)


def _money_spelt(amount: str, currency: str) -> bool:
    return _amount_spelt(amount) and (currency in _CURRENCIES or CURRENCY_SPELLING.admits(currency))


def _amount_spelt(amount: str) -> bool:
    # A native call in the compiled module: the look-up written once, as cheap as inline.
    return amount in _AMOUNTS or MONEY_SPELLING.admits(amount)
