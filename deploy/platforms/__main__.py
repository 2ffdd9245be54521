"""`python -m deploy.platforms`: the test shop (Shopify Admin GraphQL API) and the test site (WooCommerce REST
API) that `make up` runs for the demo store, each on its own loopback port."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
import uvicorn

from deploy.platforms import shopify_admin, woocommerce

SHOPIFY_PORT = 8010
WOOCOMMERCE_PORT = 8011

cli = typer.Typer(add_completion=False, help=__doc__)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
    shopify_port: Annotated[int, typer.Option(help="Port of the test shop.")] = SHOPIFY_PORT,
    woocommerce_port: Annotated[int, typer.Option(help="Port of the test site.")] = WOOCOMMERCE_PORT,
    shopify_restore_rate: Annotated[
        float, typer.Option(help="GraphQL cost points restored per second (the plan's rate limit).")
    ] = shopify_admin.ShopState.restore_rate,
    shopify_bucket: Annotated[
        float, typer.Option(help="The shop's GraphQL cost bucket (points available at most).")
    ] = shopify_admin.ShopState.maximum,
) -> None:
    """Serve both until interrupted."""
    shop = shopify_admin.ShopState(
        maximum=shopify_bucket, available=shopify_bucket, restore_rate=shopify_restore_rate
    )
    servers = [
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
        for app, port in (
            (shopify_admin.create_app(shop), shopify_port),
            (woocommerce.create_app(), woocommerce_port),
        )
    ]

    async def run() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(run())


if __name__ == "__main__":
    cli()
