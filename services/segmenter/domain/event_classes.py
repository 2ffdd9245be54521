"""The storefront event classes (shared/storefront_event_structs.py) as the compiled rules and decoder
dispatch on them: `type(event) is ORDER_PLACED`, each class a `Final` constant of a compiled module.

The classes' own module is interpreted (its Structs take class keywords a compiled class drops), so a
compiled module that imports `OrderPlacedEvent` reads it from its own module dict at every use: a dict
look-up of about 120 instructions. A `Final` name of a compiled module is a C static that the modules built
with it read in one (vocabulary.py). Every event goes through three such dispatches (the decoder's
checks, the decision's handler, the identifiers it names), each testing its classes one after another.
mypy narrows `type(event) is ORDER_PLACED` as it does the class's own name (the constant's type is the
class's), so annotations keep the classes' names and only those comparisons read these. Over the
benchmark's replay of 200,000 events, with the other imported names the rules call read as statics too:
bench/README.md, fifty-seventh round."""

from __future__ import annotations

from typing import Final

from shared import storefront_event_structs as structs

CART_ABANDONED: Final = structs.CartAbandonedEvent
CART_UPDATED: Final = structs.CartUpdatedEvent
CUSTOM: Final = structs.CustomEvent
CUSTOMER_ERASED: Final = structs.CustomerErasedEvent
IDENTITY_LINKED: Final = structs.IdentityLinkedEvent
ORDER_PLACED: Final = structs.OrderPlacedEvent
ORDER_REFUNDED: Final = structs.OrderRefundedEvent
PRODUCT_VIEWED: Final = structs.ProductViewedEvent
SURVEY_ANSWERED: Final = structs.SurveyAnsweredEvent
