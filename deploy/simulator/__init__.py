"""A storefront simulator: a believable store (customers with personas, a catalogue with bundles, carts,
orders, refunds, surveys, birthdays, referrals) sent through ingest's public endpoints.

    generator      seed -> store history (sessions of timestamped actions); pure
    segment_calls  action -> Segment call;  shopify_webhooks  action -> Shopify topic and body; pure
    http_plan      history -> signed requests in per-customer lanes; pure
    sender         requests -> ingest (concurrency, pace, retries)
    cli            `python -m deploy.simulator --help`
"""
