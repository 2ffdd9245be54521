"""See before you send: a flow's email rendered for a real or a sample customer, and test sends.

Neither plans, records nor issues anything: the coupon shown is the flow's own terms under a code that was
never issued (and is shorter than any real one, so it can never be redeemed), nothing is written to the
database, so nothing shows in /flows or in a customer's notifications. A test send goes through the same
SMTP sender as real mail, only to an address the store lists in `email.test_recipients`, with "[TEST]" in the
subject and an `X-LoyaltyFunnel-Test: true` header.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from liquid.exceptions import LiquidError
from pydantic import BaseModel, Field

from services.notifier.adapters import repository
from services.notifier.adapters.recommendations import seed_products
from services.notifier.adapters.smtp import DeliveryError, Envelope, build_email
from services.notifier.adapters.templates import RenderedMessage, TemplateProblem, TemplateRenderer, describe
from services.notifier.domain.flows import RECOMMENDING_FLOWS
from services.notifier.domain.messages import trigger_fields
from services.notifier.domain.personalisation import StoreFacts
from services.notifier.domain.samples import (
    EMAIL_FLOWS,
    SAMPLE_RECOMMENDATIONS,
    data_for,
    nearest_sample_place,
    sample_coupon,
    sample_profile,
    sample_trigger,
)
from shared.funnel import LoyaltyStage
from shared.logging import get_logger
from shared.notifier_rules import FlowName
from shared.stores import StoreConfig
from shared.web import COMMON_ERROR_RESPONSES, ApiError, FieldError, StoreDep

log = get_logger(__name__)

EmailFlow = StrEnum("EmailFlow", {name: name for name in EMAIL_FLOWS})  # type: ignore[misc]
LOCALE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$"
TEST_HEADER = "X-LoyaltyFunnel-Test"
TEST_PREFIX = "[TEST] "
ORDER_FLOWS = (FlowName.REVIEW_REQUEST.value, FlowName.FOLLOW_UP.value)

router = APIRouter(
    prefix="/v1/stores/{store_id}/flows/{flow}", tags=["flows"], responses=COMMON_ERROR_RESPONSES
)


class Preview(BaseModel):
    flow: str
    customer: str = Field(description="the customer's id, or `sample` for a sample customer")
    stage: LoyaltyStage = Field(description="the funnel stage the email was rendered for")
    locale: str = Field(description="the template language used (after falling back)")
    coupon_code: str | None = Field(description="a sample code of the flow's terms; never issued")
    subject: str
    text: str
    html: str


class TestSend(BaseModel):
    to: str = Field(description="one of the store's `email.test_recipients`", max_length=254)
    customer_id: str | None = Field(default=None, description="render for this customer; else a sample")
    stage: LoyaltyStage | None = Field(default=None, description="the sample customer's stage")
    locale: str | None = Field(default=None, pattern=LOCALE_PATTERN, description="e.g. id-ID, de, pt-BR")


class TestSent(BaseModel):
    to: str
    subject: str
    locale: str
    message_id: str = Field(description="the Message-ID header of the email handed to the SMTP server")


CustomerQuery = Annotated[
    str | None, Query(max_length=200, description="render for this customer (by id); else a sample customer")
]
StageQuery = Annotated[
    LoyaltyStage | None, Query(description="the sample customer's stage (first_time by default)")
]
DraftQuery = Annotated[
    bool,
    Query(description="render the store's templates as they are on disk now (before a reload), validated"),
]
LocaleQuery = Annotated[
    str | None, Query(pattern=LOCALE_PATTERN, description="e.g. id-ID, de; else the customer's")
]


@router.get(
    "/preview",
    response_model=Preview,
    summary="The flow's email (subject, text, html) for a customer or a sample customer; nothing is sent",
)
async def preview(
    store: StoreDep,
    flow: EmailFlow,
    request: Request,
    customer_id: CustomerQuery = None,
    locale: LocaleQuery = None,
    stage: StageQuery = None,
    draft: DraftQuery = False,
) -> Preview:
    return await _compose(request, store, str(flow), customer_id, locale, stage, draft=draft)


@router.post(
    "/test-send",
    response_model=TestSent,
    summary="Send the flow's email to one of the store's test recipients, marked as a test",
)
async def test_send(
    store: StoreDep, flow: EmailFlow, request: Request, body: Annotated[TestSend, Body()]
) -> TestSent:
    allowed = {address.strip().casefold() for address in store.email.test_recipients}
    if body.to.strip().casefold() not in allowed:
        raise ApiError(
            403,
            "not_a_test_recipient",
            "test emails go only to the store's email.test_recipients",
            errors=[FieldError(field="to", message="not one of the store's test recipients")],
        )
    composed = await _compose(request, store, str(flow), body.customer_id, body.locale, body.stage)
    rendered = RenderedMessage(TEST_PREFIX + composed.subject, composed.text, composed.html)
    headers: tuple[tuple[str, str], ...] = ((TEST_HEADER, "true"),)
    if store.email.reply_to:
        headers += (("Reply-To", store.email.reply_to),)
    email = build_email(
        Envelope(store.email.from_address, store.email.from_name, body.to.strip(), headers), rendered
    )
    try:
        await request.app.state.smtp.send(email)
    except DeliveryError as exc:
        raise ApiError(
            503,
            "smtp_unavailable",
            f"the SMTP server did not take the test email: {exc}",
            headers={"Retry-After": "5"},
        ) from exc
    log.info("test_email_sent", store_id=store.store_id, flow=str(flow))
    return TestSent(
        to=body.to.strip(),
        subject=rendered.subject,
        locale=composed.locale,
        message_id=str(email["Message-ID"]),
    )


async def _compose(
    request: Request,
    store: StoreConfig,
    flow: str,
    customer_id: str | None,
    locale: str | None,
    stage: LoyaltyStage | None,
    *,
    draft: bool = False,
) -> Preview:
    renderer: TemplateRenderer = request.app.state.renderer
    try:
        # A draft validates the store's files in a thread: a second of work, not for the event loop.
        templates = await asyncio.to_thread(renderer.draft, store) if draft else renderer.templates_for(store)
    except TemplateProblem as exc:
        raise _template_problems(exc) from exc
    now = request.app.state.clock()
    trigger: dict[str, Any]
    if customer_id:
        async with request.app.state.engine.connect() as conn:
            known = await repository.customer(conn, store.store_id, customer_id)
            if known is None:
                raise ApiError(404, "customer_not_found", "no such customer in this store")
            sent_before = [
                m for m in await repository.list_messages(conn, store.store_id, customer_id) if m.flow == flow
            ]
        profile = dict(known.profile)
        stage = known.stage
        # What the customer's last message of this flow was about, else what such a trigger looks like.
        last = max(sent_before, key=lambda m: m.created_at, default=None)
        trigger = trigger_fields(last.trigger) if last is not None and last.trigger is not None else {}
        trigger = trigger or sample_trigger(flow, store.currency, store.notifier.site_url)
        recommendations = (
            await request.app.state.recommender.recommend(store, seed_products(trigger, profile), now)
            if flow in RECOMMENDING_FLOWS
            else []
        )
    else:
        stage = stage or LoyaltyStage.FIRST_TIME
        city, country = nearest_sample_place(store.notifier.locations)
        profile = sample_profile(stage, store.locale, city, country)
        trigger = sample_trigger(flow, store.currency, store.notifier.site_url)
        recommendations = list(SAMPLE_RECOMMENDATIONS)
    if locale:
        profile["locale"] = locale
    currency = str(trigger.get("currency") or store.currency)
    # A cashback coupon is a share of the order that triggered the flow.
    total = Decimal(str(trigger["total"])) if flow in ORDER_FLOWS and trigger.get("total") else None
    coupon = sample_coupon(flow, store.notifier, stage, currency, total, now)
    rule = store.notifier.flow(FlowName(flow))
    language = templates.locale_for(flow, profile.get("locale"))
    public_url = request.app.state.public_url
    data = data_for(
        flow,
        StoreFacts.of(store),
        profile,
        trigger,
        coupon,
        recommendations,
        f"{public_url}/u/preview" if not rule.transactional else None,
        language,
    )
    try:
        rendered = templates.render(flow, profile.get("locale"), data)
    except LiquidError as exc:
        problem = describe(exc, f"{flow}/{language}")
        raise ApiError(
            422, "template_error", problem, errors=[FieldError(field="templates", message=problem)]
        ) from exc
    except TemplateProblem as exc:
        raise _template_problems(exc) from exc
    return Preview(
        flow=flow,
        customer=customer_id or "sample",
        stage=stage,
        locale=language,
        coupon_code=coupon.code if coupon else None,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )


def _template_problems(exc: TemplateProblem) -> ApiError:
    return ApiError(
        422,
        "template_error",
        "the store's templates do not validate",
        errors=[FieldError(field="templates", message=p) for p in exc.problems[:20]],
    )
