"""The support alert: a low satisfaction score sends the store's support team a webhook, not the customer an
email. Loyal customers and advocates are flagged as a priority: they are the ones a store can least afford to
lose (docs/domain.md, "Prioritised support").
"""

from __future__ import annotations

from typing import Any

from services.notifier.domain.messages import KnownCustomer, Message
from shared.funnel import LoyaltyStage
from shared.funnel_events import SurveyScored

PRIORITY_STAGES = frozenset({LoyaltyStage.LOYAL, LoyaltyStage.ADVOCATE})


def is_priority(customer: KnownCustomer) -> bool:
    return customer.stage in PRIORITY_STAGES


def alert_subject(customer: KnownCustomer) -> str:
    """What the message's record says was sent (the webhook has no subject of its own)."""
    priority = " (priority)" if is_priority(customer) else ""
    return f"Low satisfaction from a {customer.stage.value} customer{priority}"


def support_alert(message: Message, customer: KnownCustomer) -> dict[str, Any]:
    """The webhook's body."""
    profile = customer.profile
    survey = message.trigger if isinstance(message.trigger, SurveyScored) else None
    return {
        "type": "low_satisfaction",
        "priority": is_priority(customer),
        "store_id": message.store_id,
        "customer_id": message.customer_id,
        "stage": customer.stage.value,
        "health": customer.health.value,
        "email": customer.email,
        "first_name": profile.get("first_name"),
        "orders_count": profile.get("orders_count", 0),
        "survey": {
            "survey_id": survey.survey_id if survey else None,
            "csat": survey.csat if survey else None,
            "ces": survey.ces if survey else None,
            "nps": survey.nps if survey else None,
            "level": survey.level.value if survey else None,
        },
    }
