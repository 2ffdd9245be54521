"""The store registry: which storefronts we serve and how each one proves who it is.

Loaded once at start-up from the YAML file named by STORES_FILE and validated, so a typo fails the
deploy instead of the first webhook.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from shared.audience_rules import AudienceRules
from shared.funnel_rules import FunnelRules
from shared.notifier_rules import NotifierRules

StoreId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]

# Secrets that ship in the development registry; a production deploy must not run with them.
_PLACEHOLDER_PREFIXES = ("demo-", "change-me", "changeme", "example")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShopifyConfig(_Model):
    shop_domain: str
    webhook_secret: SecretStr

    @field_validator("shop_domain")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class WooCommerceConfig(_Model):
    site_url: str
    webhook_secret: SecretStr


class SegmentConfig(_Model):
    write_key: SecretStr


class EmailConfig(_Model):
    from_address: str = "hello@example.com"
    from_name: str = "Our store"


class StoreConfig(_Model):
    store_id: StoreId
    name: str
    api_key: SecretStr
    timezone: str = "UTC"
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    shopify: ShopifyConfig | None = None
    woocommerce: WooCommerceConfig | None = None
    segment: SegmentConfig | None = None
    email: EmailConfig = EmailConfig()
    # Production defaults live in FunnelRules; the development registry shortens the timers so a demo
    # shows every flow within a minute.
    funnel: FunnelRules = FunnelRules()
    # Flows, coupons, guards and personalisation of the notifier; production defaults in NotifierRules.
    notifier: NotifierRules = NotifierRules()
    # Retargeting audiences (defaults: all_customers, loyal_and_advocates, win_back, cart_abandoners), sync.
    audiences: AudienceRules = AudienceRules()

    def accepts_api_key(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.api_key.get_secret_value().encode())

    def secrets(self) -> list[str]:
        found = [self.api_key.get_secret_value()]
        for part in (self.shopify, self.woocommerce):
            if part is not None:
                found.append(part.webhook_secret.get_secret_value())
        if self.segment is not None:
            found.append(self.segment.write_key.get_secret_value())
        for hook in (self.notifier.support_webhook, self.notifier.messaging_webhook, self.audiences.sync):
            if hook is not None:
                found.append(hook.secret.get_secret_value())
        return found


class StoreRegistryError(ValueError):
    pass


class StoreRegistry:
    def __init__(self, stores: list[StoreConfig]) -> None:
        self._by_id = {store.store_id: store for store in stores}
        if len(self._by_id) != len(stores):
            raise StoreRegistryError("duplicate store_id in the registry")
        self._by_shop = {s.shopify.shop_domain: s for s in stores if s.shopify is not None}
        self._by_woo_site = {
            _site_key(s.woocommerce.site_url): s for s in stores if s.woocommerce is not None
        }
        # Indexed by a digest, so looking a presented key up does not compare secrets byte by byte.
        self._by_write_key = {
            _digest(s.segment.write_key.get_secret_value()): s for s in stores if s.segment is not None
        }

    @classmethod
    def load(cls, path: Path, *, allow_placeholder_secrets: bool = True) -> StoreRegistry:
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise StoreRegistryError(f"cannot read store registry {path}: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("stores"), dict):
            raise StoreRegistryError(f"{path}: expected a mapping `stores: {{<store_id>: ...}}`")
        stores: list[StoreConfig] = []
        for store_id, body in document["stores"].items():
            try:
                stores.append(StoreConfig.model_validate({"store_id": store_id, **(body or {})}))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise StoreRegistryError(f"{path}: store {store_id!r} is invalid: {problems}") from exc
        registry = cls(stores)
        if not allow_placeholder_secrets:
            registry._refuse_placeholders()
        return registry

    def _refuse_placeholders(self) -> None:
        for store in self._by_id.values():
            if any(secret.lower().startswith(_PLACEHOLDER_PREFIXES) for secret in store.secrets()):
                raise StoreRegistryError(
                    f"store {store.store_id!r} uses a development placeholder secret outside development"
                )

    def get(self, store_id: str) -> StoreConfig | None:
        return self._by_id.get(store_id)

    def by_shop_domain(self, shop_domain: str) -> StoreConfig | None:
        return self._by_shop.get(shop_domain.strip().lower())

    def by_woocommerce_site(self, site_url: str) -> StoreConfig | None:
        return self._by_woo_site.get(_site_key(site_url))

    def by_write_key(self, write_key: str) -> StoreConfig | None:
        return self._by_write_key.get(_digest(write_key))

    def __iter__(self) -> Iterator[StoreConfig]:
        return iter(self._by_id.values())


def _site_key(url: str) -> str:
    """WooCommerce sends its home URL with or without the trailing slash, in any case of host."""
    return url.strip().lower().rstrip("/")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
