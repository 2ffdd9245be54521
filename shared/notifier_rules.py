"""Per-store messaging rules, read from the store registry (`notifier:` of a store), validated at start-up.

Defaults are the product's recommendations (docs/domain.md, "The plays"): one thank-you after the first
order, a coupon for the items of an abandoned cart, a review request a week after an order, a "did we win
you over?" 30 days after it, a milestone at the second order, VIP, referral, win-back, birthday and
survey-reward messages. At most one marketing email per 16 hours and three per week, none between 21:00 and
08:00 in the customer's time.
"""

from __future__ import annotations

from datetime import time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator

from shared.funnel import LoyaltyStage
from shared.funnel_rules import RuleDuration


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FlowName(StrEnum):
    WELCOME = "welcome"
    ABANDONED_CART = "abandoned_cart"
    REVIEW_REQUEST = "review_request"
    FOLLOW_UP = "follow_up"
    REPEAT_MILESTONE = "repeat_milestone"
    VIP = "vip"
    REFERRAL = "referral"
    WIN_BACK = "win_back"
    BIRTHDAY = "birthday"
    SURVEY_THANKS = "survey_thanks"
    # Not an email: a low satisfaction score reaches the store's support team.
    SUPPORT_ALERT = "support_alert"


class CouponKind(StrEnum):
    PERCENT = "percent"
    FIXED = "fixed"
    FREE_SHIPPING = "free_shipping"
    CASHBACK = "cashback"  # a share of the triggering order, returned as credit for a later purchase


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"  # an SMS or WhatsApp provider behind the store's messaging webhook


class CouponRule(_Model):
    kind: CouponKind
    # percent and cashback: a percentage; fixed: an amount in the store's currency; free_shipping: unused.
    value: Annotated[Decimal, Field(ge=0, le=100_000)] = Decimal("0")
    by_stage: dict[LoyaltyStage, Annotated[Decimal, Field(ge=0, le=100_000)]] = Field(default_factory=dict)
    valid_for: RuleDuration = timedelta(days=14)
    prefix: Annotated[str, Field(pattern=r"^[A-Z0-9]{0,12}$")] = ""

    @model_validator(mode="after")
    def _percent_is_a_percentage(self) -> CouponRule:
        percentage = self.kind in (CouponKind.PERCENT, CouponKind.CASHBACK)
        if percentage and any(v > 100 for v in (self.value, *self.by_stage.values())):
            raise ValueError(f"a {self.kind.value} coupon's value is a percentage (0-100)")
        return self

    def value_for(self, stage: LoyaltyStage) -> Decimal:
        return self.by_stage.get(stage, self.value)


class FlowRule(_Model):
    enabled: bool = True
    # Wall time between the trigger and the send (a durable job); 0 = at once.
    delay: RuleDuration = timedelta(0)
    # A trigger older than this when it reaches us is history being replayed: never message anyone for it.
    max_age: RuleDuration = timedelta(days=2)
    # How long a deferred message (quiet hours, frequency cap) may wait before it is no longer worth sending.
    send_within: RuleDuration = timedelta(days=3)
    transactional: bool = False
    exit_on_order: bool = False
    coupon: CouponRule | None = None
    channel: Channel = Channel.EMAIL


def _flow(**overrides: object) -> FlowRule:
    return FlowRule.model_validate(overrides)


DEFAULT_FLOWS: dict[FlowName, FlowRule] = {
    FlowName.WELCOME: _flow(transactional=True),
    FlowName.ABANDONED_CART: _flow(
        exit_on_order=True,
        send_within=timedelta(days=2),
        coupon={"kind": "percent", "value": 10, "valid_for": timedelta(days=3), "prefix": "CART"},
    ),
    FlowName.REVIEW_REQUEST: _flow(delay=timedelta(days=7), send_within=timedelta(days=5)),
    FlowName.FOLLOW_UP: _flow(
        delay=timedelta(days=30),
        exit_on_order=True,
        coupon={"kind": "cashback", "value": 5, "valid_for": timedelta(days=30), "prefix": "BACK"},
    ),
    FlowName.REPEAT_MILESTONE: _flow(),
    FlowName.VIP: _flow(
        coupon={
            "kind": "percent",
            "value": 15,
            "by_stage": {"advocate": 20},
            "valid_for": timedelta(days=60),
            "prefix": "VIP",
        }
    ),
    FlowName.REFERRAL: _flow(
        send_within=timedelta(days=7),
        coupon={"kind": "percent", "value": 15, "valid_for": timedelta(days=90), "prefix": "FRIEND"},
    ),
    FlowName.WIN_BACK: _flow(
        exit_on_order=True,
        send_within=timedelta(days=7),
        coupon={"kind": "percent", "value": 15, "valid_for": timedelta(days=21), "prefix": "MISSYOU"},
    ),
    FlowName.BIRTHDAY: _flow(
        max_age=timedelta(days=3),
        coupon={"kind": "percent", "value": 20, "valid_for": timedelta(days=30), "prefix": "BDAY"},
    ),
    # The reward was promised for answering: the customer asked for it, so it is not marketing.
    FlowName.SURVEY_THANKS: _flow(
        transactional=True,
        coupon={"kind": "fixed", "value": 5, "valid_for": timedelta(days=60), "prefix": "THANKS"},
    ),
    FlowName.SUPPORT_ALERT: _flow(transactional=True, send_within=timedelta(days=7)),
}


class QuietHours(_Model):
    start: time = time(21, 0)
    end: time = time(8, 0)


class FrequencyCap(_Model):
    min_gap: RuleDuration = timedelta(hours=16)
    per_week: Annotated[int, Field(ge=1, le=100)] = 3


class SignedWebhook(_Model):
    url: HttpUrl
    secret: SecretStr


class Location(_Model):
    name: str
    city: str | None = None
    country: str | None = None
    address: str | None = None
    url: str | None = None


# Store-written text shown in emails: one string, or one per language ({"en": ..., "de": ...}).
LocalisedText = str | dict[str, str]


def localised(text: LocalisedText | None, language: str) -> str | None:
    """The text in the email's language, else English, else whatever the store wrote first."""
    if text is None or isinstance(text, str):
        return text or None
    return text.get(language) or text.get("en") or next(iter(text.values()), None)


class ReferralTerms(_Model):
    # Unset: the built-in templates describe the friend's coupon and a thank-you in the email's language.
    friend_gets: LocalisedText | None = None
    you_get: LocalisedText | None = None


Colour = Annotated[str, Field(pattern=r"^#(?:[0-9a-fA-F]{3}){1,2}$")]


class BrandColours(_Model):
    primary: Colour = "#1f6f5c"  # buttons, links, the top bar
    on_primary: Colour = "#ffffff"  # text on buttons
    background: Colour = "#f4f1ec"  # around the message
    text: Colour = "#222222"


class Brand(_Model):
    """How every email of the store looks and signs off; bulk-sender rules (CAN-SPAM, Gmail and Yahoo's
    2024 sender requirements) ask marketing mail to carry the sender's postal address."""

    logo_url: Annotated[str, Field(pattern=r"^https://|^http://(127\.0\.0\.1|localhost)[:/]")] | None = None
    logo_alt: str | None = None  # defaults to the store's name
    logo_width: Annotated[int, Field(ge=16, le=600)] = 160
    colours: BrandColours = BrandColours()
    postal_address: str | None = None
    legal_footer: LocalisedText | None = None


class NotifierRules(_Model):
    site_url: str = "https://shop.example.com"
    # The three-part loyalty survey; defaults to <site_url>/pages/loyalty-survey.
    survey_url: str | None = None
    community_url: str | None = None
    support_email: str | None = None
    locations: tuple[Location, ...] = ()
    # country (as in the customer's profile) -> a line of local content
    local_offers: dict[str, str] = Field(default_factory=dict)
    best_sellers: tuple[str, ...] = ()  # product ids pinned as fallback recommendations
    referral: ReferralTerms = ReferralTerms()
    quiet_hours: QuietHours | None = QuietHours()
    frequency_cap: FrequencyCap = FrequencyCap()
    attribution_window: RuleDuration = timedelta(days=5)
    low_csat_at_most: Annotated[int, Field(ge=1, le=5)] = 2
    # Hosts besides the store's own (site_url, community_url, survey_url, Shopify shop domain, WooCommerce
    # site) that links and images in emails may point to, such as a CDN: `cdn.example.com`, or
    # `*.example.com` for every subdomain. Any other link (a cart recovery link sent in an event) is dropped.
    allowed_link_hosts: tuple[Annotated[str, Field(pattern=r"^(\*\.)?[A-Za-z0-9.-]+$")], ...] = ()
    support_webhook: SignedWebhook | None = None
    messaging_webhook: SignedWebhook | None = None
    # Stores on neither Shopify nor WooCommerce (Segment only): each coupon is POSTed here, signed, and the
    # message waits for the 2xx that says the store's checkout will accept the code.
    coupon_webhook: SignedWebhook | None = None
    flows: dict[FlowName, FlowRule] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_flow_defaults(cls, data: object) -> object:
        """A store overrides only what it names: `flows: {review_request: {delay: 30}}` keeps the rest."""
        if not isinstance(data, dict):
            return data
        given = data.get("flows") or {}
        if not isinstance(given, dict):
            return data
        unknown = sorted(set(given) - {f.value for f in FlowName})
        if unknown:
            raise ValueError(f"unknown flows {unknown}; known: {[f.value for f in FlowName]}")
        merged = {
            name: (
                FlowRule.model_validate({**rule.model_dump(exclude_defaults=True), **given[name.value]})
                if given.get(name.value) is not None
                else rule
            )
            for name, rule in DEFAULT_FLOWS.items()
        }
        return {**data, "flows": merged}

    def flow(self, name: FlowName) -> FlowRule:
        return self.flows.get(name) or DEFAULT_FLOWS[name]

    @property
    def loyalty_survey_url(self) -> str:
        return self.survey_url or f"{self.site_url.rstrip('/')}/pages/loyalty-survey"
