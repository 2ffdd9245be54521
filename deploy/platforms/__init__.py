"""Local stand-ins for the store platforms the notifier talks to: a Shopify Admin GraphQL API and a
WooCommerce REST API that answer with the shapes those platforms document (each cites its page), keep state
(discounts, coupons, consent, store credit, webhooks) and let tests and the demo look at it under
`/_test/`.

They are test servers, not mocks of our client: they validate what the platforms validate and fail the way
the platforms fail (401, userErrors, a duplicate code, THROTTLED), so the real notifier is tested
against them.
`make up` runs them beside the SMTP sink; the development registry points the `demo` store at them.
"""
