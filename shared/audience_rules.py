"""Per-store retargeting audiences, read from the store registry (`audiences:` of a store), validated at
start-up.

Every store gets four audiences unless it switches one off: `all_customers`, `loyal_and_advocates`,
`win_back` (at risk or lapsed) and `cart_abandoners` (abandoned a cart in the last 7 days and has not
ordered since). A store adds its own under `definitions`, each a conjunction of criteria on what the
notifier knows of a customer; a criterion left out does not narrow the audience:

    audiences:
      definitions:
        coffee_lovers:
          description: Repeat and loyal customers who buy coffee
          stages: [repeat, loyal]
          health: [active]
          categories: [coffee]
          min_orders: 2
        recent_buyers: {ordered_within: 30d}
        cart_abandoners: {cart_abandoned_within: 3d}   # a default, overridden
        win_back: {enabled: false}                      # a default, switched off
      sync:
        url: https://ads-bridge.example.com/audiences
        secret: a-long-random-secret
        batch_size: 10000

Nothing is exported or pushed unless the customer accepts marketing and has not unsubscribed; that rule is
not configurable.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator, model_validator

from shared.funnel import Health, LoyaltyStage, SurveyLevel
from shared.funnel_rules import PositiveDuration

# Meta's Marketing API takes at most 10,000 users per request; Google's Customer Match the same per operation.
MAX_SYNC_BATCH = 10_000

AudienceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Window = PositiveDuration
Label = Annotated[str, Field(min_length=1, max_length=255)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AudienceDefinition(_Model):
    """Who belongs: every criterion given must hold (lists match any of their values)."""

    description: str = ""
    enabled: bool = True
    stages: frozenset[LoyaltyStage] = frozenset()
    health: frozenset[Health] = frozenset()
    min_survey_level: SurveyLevel | None = None
    # Categories or product ids the customer bought or browsed (favourite categories, last products);
    # compared without regard to case.
    categories: frozenset[Label] = frozenset()
    products: frozenset[Label] = frozenset()
    # ISO 3166 alpha-2 codes or English names ("DE", "Germany"), as storefronts send either.
    countries: frozenset[Label] = frozenset()
    min_orders: Annotated[int, Field(ge=0)] | None = None
    max_orders: Annotated[int, Field(ge=0)] | None = None
    min_total_spent: Annotated[Decimal, Field(ge=0)] | None = None
    max_total_spent: Annotated[Decimal, Field(ge=0)] | None = None
    # Time-based criteria, held only for a while: the notifier re-evaluates members when they lapse.
    ordered_within: Window | None = None  # last order at most this long ago
    no_order_within: Window | None = None  # has ordered, but not within this long
    cart_abandoned_within: Window | None = None  # abandoned a cart this recently and no order since

    @field_validator("categories", "products", mode="after")
    @classmethod
    def _folded(cls, values: frozenset[str]) -> frozenset[str]:
        return frozenset(v.strip().casefold() for v in values)

    @model_validator(mode="after")
    def _ranges_make_sense(self) -> AudienceDefinition:
        if self.min_orders is not None and self.max_orders is not None and self.min_orders > self.max_orders:
            raise ValueError("min_orders is above max_orders: the audience would always be empty")
        low, high = self.min_total_spent, self.max_total_spent
        if low is not None and high is not None and low > high:
            raise ValueError("min_total_spent is above max_total_spent: the audience would always be empty")
        return self

    @property
    def time_based(self) -> bool:
        return any(
            w is not None for w in (self.ordered_within, self.no_order_within, self.cart_abandoned_within)
        )


DEFAULT_AUDIENCES: dict[str, AudienceDefinition] = {
    "all_customers": AudienceDefinition(description="Every customer the store knows"),
    "loyal_and_advocates": AudienceDefinition(
        description="Loyal customers and advocates: lookalike seeds and VIP offers",
        stages=frozenset({LoyaltyStage.LOYAL, LoyaltyStage.ADVOCATE}),
    ),
    "win_back": AudienceDefinition(
        description="Customers at risk or lapsed: remind them of what they bought",
        health=frozenset({Health.AT_RISK, Health.LAPSED}),
    ),
    "cart_abandoners": AudienceDefinition(
        description="Abandoned a cart in the last 7 days and has not ordered since",
        cart_abandoned_within=timedelta(days=7),
    ),
}

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AudienceSync(_Model):
    """Push sync: an HTTPS endpoint (a bridge to Meta, Google...) receives added and removed members."""

    url: HttpUrl
    secret: SecretStr = Field(min_length=16)
    batch_size: Annotated[int, Field(ge=1, le=MAX_SYNC_BATCH)] = MAX_SYNC_BATCH
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 15.0

    @field_validator("url")
    @classmethod
    def _https_or_loopback(cls, url: HttpUrl) -> HttpUrl:
        # Hashed contact data is still personal data: it only travels encrypted, except to this machine
        # (tests and local development).
        if url.scheme != "https" and not is_loopback_host(url.host):
            raise ValueError("the sync URL must use https (plain http only to a loopback host)")
        return url


class AudienceRules(_Model):
    definitions: dict[AudienceName, AudienceDefinition] = Field(
        default_factory=lambda: dict(DEFAULT_AUDIENCES)
    )
    sync: AudienceSync | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        """A store names only what it adds or changes; a default it names is replaced field by field."""
        if not isinstance(data, dict):
            return data
        given = data.get("definitions") or {}
        if not isinstance(given, dict):
            return data
        merged: dict[str, Any] = dict(DEFAULT_AUDIENCES)
        for name, body in given.items():
            default = DEFAULT_AUDIENCES.get(name)
            if default is not None and isinstance(body, dict):
                merged[name] = {**default.model_dump(exclude_defaults=True), **body}
            else:
                merged[name] = body
        return {**data, "definitions": merged}

    def active(self) -> dict[str, AudienceDefinition]:
        """The audiences in use, by name, in a stable order."""
        return {name: d for name, d in sorted(self.definitions.items()) if d.enabled}
