"""The store registry: which storefronts we serve and how each one proves who it is.

Loaded once at start-up from the YAML file named by STORES_FILE and validated, so a typo fails the
deploy instead of the first webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.audience_rules import AudienceRules
from shared.credentials import CredentialError, read_credential
from shared.funnel_rules import FunnelRules
from shared.logging import get_logger
from shared.notifier_rules import Brand, NotifierRules
from shared.origins import AllowedOrigin, OriginSet, origin_set
from shared.registry_checks import (
    SecretFacts,
    duplicates,
    secret_problems,
    secrets_of,
    sha256_hex,
    url_problem,
    urls_of,
)

StoreId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]

# An empty secret would let anyone sign: refused in every environment.
Secret = Annotated[SecretStr, Field(min_length=1)]
# The Shopify Admin API version every call is pinned to (Shopify supports each for a year).
SHOPIFY_API_VERSION = "2025-10"
EnvName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")]

log = get_logger(__name__)


def outside_url(value: str, what: str) -> str:
    """A platform or webhook address: https, or plain http only on a loopback address (a local test
    server). Credentials never travel in clear text over a network."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(f"{what} must use https (http is accepted only for loopback addresses)")
    return value.strip()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DiscountCombination(_Model):
    """Which other discounts a code we create in Shopify combines with (Shopify's `combinesWith`)."""

    order_discounts: bool = False
    product_discounts: bool = False
    shipping_discounts: bool = True


class ShopifyConfig(_Model):
    shop_domain: str
    webhook_secret: Secret
    # Admin GraphQL API: where, which version, and the access token's env variable or file. Without a
    # token the store is not connected: coupons stay ours and consent is not synced.
    api_version: Annotated[str, Field(pattern=r"^(\d{4}-\d{2}|unstable)$")] = SHOPIFY_API_VERSION
    admin_api_url: str | None = None
    admin_token_env: EnvName | None = None
    admin_token_file: Path | None = None
    combines_with: DiscountCombination = DiscountCombination()
    # Cashback (follow_up) as Shopify store credit rather than a fixed-amount code; needs the
    # write_store_credit_account_transactions scope.
    store_credit: bool = False

    @field_validator("shop_domain")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("admin_api_url")
    @classmethod
    def _admin_url(cls, value: str | None) -> str | None:
        return None if value is None else outside_url(value, "shopify.admin_api_url")

    @property
    def admin_url(self) -> str:
        return self.admin_api_url or (f"https://{self.shop_domain}/admin/api/{self.api_version}/graphql.json")

    @property
    def connected(self) -> bool:
        return bool(self.admin_token_env or self.admin_token_file)


class WooCommerceConfig(_Model):
    site_url: str
    webhook_secret: Secret
    # REST API v3 with a consumer key and secret (Basic auth over https). Calls go to
    # `<site_url>wp-json/wc/v3/`; `api_url` overrides that base (a local test site).
    api_url: str | None = None
    consumer_key_env: EnvName | None = None
    consumer_key_file: Path | None = None
    consumer_secret_env: EnvName | None = None
    consumer_secret_file: Path | None = None
    # WooCommerce records no marketing consent: the order or customer meta field the store's opt-in
    # checkbox writes. Without one, WooCommerce customers get transactional messages only.
    consent_meta_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    consent_yes_values: tuple[str, ...] = ("yes", "1", "true", "on", "subscribed")

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        return None if value is None else outside_url(value, "woocommerce.api_url")

    @model_validator(mode="after")
    def _credentials_only_over_https(self) -> WooCommerceConfig:
        # The consumer key travels as Basic auth to <site_url>wp-json/wc/v3/ unless api_url says otherwise.
        if self.connected and self.api_url is None:
            outside_url(self.site_url, "woocommerce.site_url")
        return self

    @property
    def rest_url(self) -> str:
        base = (
            self.api_url or outside_url(self.site_url, "woocommerce.site_url").rstrip("/") + "/wp-json/wc/v3"
        )
        return base.rstrip("/") + "/"

    @property
    def connected(self) -> bool:
        return bool(self.consumer_key_env or self.consumer_key_file)


class SegmentConfig(_Model):
    # Secret: the store's servers (analytics-node, analytics-python...) send anything with it.
    write_key: Secret
    # Public by nature (it sits in every page's snippet): page views, identity and browsing/cart events only.
    browser_write_key: str | None = Field(default=None, min_length=8, max_length=200)


class WriteKeyKind(StrEnum):
    SERVER = "server"
    BROWSER = "browser"


class EmailConfig(_Model):
    from_address: str = "hello@example.com"
    from_name: str = "Our store"
    reply_to: str | None = None
    # Addresses the store may send test emails to (POST .../flows/{flow}/test-send); nobody else.
    test_recipients: tuple[str, ...] = ()


class StoreConfig(_Model):
    store_id: StoreId
    name: str
    # The REST API key is kept only as its SHA-256: the registry gives either `api_key` (hashed here, the
    # plain key dropped) or `api_key_sha256` (what a production registry should hold: `printf %s "$KEY" |
    # sha256sum`), so neither a memory dump nor a leaked registry file gives the key away.
    api_key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    # How strong the plain key was, for the production checks; None when only the digest was given.
    api_key_facts: SecretFacts | None = Field(default=None, exclude=True, repr=False)
    timezone: str = "UTC"
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    shopify: ShopifyConfig | None = None
    woocommerce: WooCommerceConfig | None = None
    segment: SegmentConfig | None = None
    # Web origins whose pages may call the Segment API from a browser (CORS), as
    # `scheme://host[:port|:*]` or `https://*.example.com`. Empty: no browser may call.
    allowed_origins: tuple[str, ...] = ()
    email: EmailConfig = EmailConfig()
    # The store's language when a customer's is unknown or has no templates (then English).
    locale: Annotated[str, Field(pattern=r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")] = "en"
    brand: Brand = Brand()
    # The store's own templates (<flow>/<locale>/{subject,text,html}.liquid and _partials/), each file
    # overriding the built-in one of the same name; relative to the registry file.
    templates_dir: Path | None = None
    # Production defaults live in FunnelRules; the development registry shortens the timers so a demo
    # shows every flow within a minute.
    funnel: FunnelRules = FunnelRules()
    # Flows, coupons, guards and personalisation of the notifier; production defaults in NotifierRules.
    notifier: NotifierRules = NotifierRules()
    # Retargeting audiences (defaults: all_customers, loyal_and_advocates, win_back, cart_abandoners), sync.
    audiences: AudienceRules = AudienceRules()

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            AllowedOrigin.parse(origin)
        return tuple(origin.strip().lower().rstrip("/") for origin in value)

    def allows_origin(self, origin: str) -> bool:
        """Whether a page of `origin` (the browser's Origin header) may call with this store's keys."""
        return origin_set(self.allowed_origins).allows(origin)

    @model_validator(mode="before")
    @classmethod
    def _hash_api_key(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        if "api_key_facts" in data:
            raise ValueError("api_key_facts is computed, not configured")
        if "api_key" not in data:
            return data
        data = dict(data)
        key = data.pop("api_key")
        if "api_key_sha256" in data:
            raise ValueError("give api_key or api_key_sha256, not both")
        if isinstance(key, SecretStr):
            key = key.get_secret_value()
        if not isinstance(key, str) or not key:
            raise ValueError("api_key must be a non-empty string")
        return {**data, "api_key_sha256": sha256_hex(key), "api_key_facts": SecretFacts.of(key)}

    def link_hosts(self) -> frozenset[str]:
        """The store's platform hosts, which links in its emails (cart recovery) may point to, besides the
        hosts its notifier rules name (site_url, community_url, survey_url, allowed_link_hosts)."""
        hosts = set()
        if self.shopify is not None:
            hosts.add(self.shopify.shop_domain)
        if self.woocommerce is not None and (host := urlsplit(self.woocommerce.site_url).hostname):
            hosts.add(host.lower())
        return frozenset(hosts)

    def accepts_api_key(self, presented: str) -> bool:
        # Digest against digest: constant time, and the plain key is nowhere in memory to compare with.
        return hmac.compare_digest(sha256_hex(presented), self.api_key_sha256)

    def problems(self, *, production: bool) -> list[str]:
        """What this store's configuration must not have: every outbound URL https (loopback http outside
        production); in production, every secret long and unpredictable and none a placeholder."""
        where = f"store {self.store_id!r}"
        found = [
            problem
            for path, url in urls_of(self)
            if (problem := url_problem(f"{where}: {path}", url, production=production)) is not None
        ]
        if not production:
            return found
        if self.api_key_facts is not None:
            found.extend(secret_problems(f"{where}: api_key", self.api_key_facts))
        for path, secret in secrets_of(self):
            found.extend(secret_problems(f"{where}: {path}", SecretFacts.of(secret)))
        return found


@dataclass(frozen=True)
class PlatformCredentials:
    """A store's platform credentials as read at start-up; `problems` names what could not be read."""

    shopify_admin_token: SecretStr | None = None
    woo_consumer_key: SecretStr | None = None
    woo_consumer_secret: SecretStr | None = None
    problems: tuple[str, ...] = ()

    def values(self) -> list[str]:
        return [value for _, value in self.named()]

    def named(self) -> list[tuple[str, str]]:
        found = {
            "shopify admin token": self.shopify_admin_token,
            "woocommerce consumer key": self.woo_consumer_key,
            "woocommerce consumer secret": self.woo_consumer_secret,
        }
        return [(name, s.get_secret_value()) for name, s in found.items() if s is not None]


def read_platform_credentials(store: StoreConfig, *, development: bool) -> PlatformCredentials:
    found: dict[str, SecretStr | None] = {}
    problems: list[str] = []
    wanted: list[tuple[str, str | None, Path | None]] = []
    if store.shopify is not None:
        wanted.append(("shopify_admin_token", store.shopify.admin_token_env, store.shopify.admin_token_file))
    if store.woocommerce is not None:
        woo = store.woocommerce
        wanted.append(("woo_consumer_key", woo.consumer_key_env, woo.consumer_key_file))
        wanted.append(("woo_consumer_secret", woo.consumer_secret_env, woo.consumer_secret_file))
    for name, env, file in wanted:
        try:
            found[name] = read_credential(env, file, development=development)
        except CredentialError as exc:
            problems.append(f"{name}: {exc}")
    return PlatformCredentials(
        shopify_admin_token=found.get("shopify_admin_token"),
        woo_consumer_key=found.get("woo_consumer_key"),
        woo_consumer_secret=found.get("woo_consumer_secret"),
        problems=tuple(problems),
    )


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
        self._by_write_key: dict[bytes, tuple[StoreConfig, WriteKeyKind]] = {}
        for s in stores:
            if s.segment is None:
                continue
            keys = [(s.segment.write_key.get_secret_value(), WriteKeyKind.SERVER)]
            if s.segment.browser_write_key is not None:
                keys.append((s.segment.browser_write_key, WriteKeyKind.BROWSER))
            for key, kind in keys:
                digest = _digest(key)
                if digest in self._by_write_key:
                    # Else one store's events would go to another, or the public key pass for the secret one.
                    raise StoreRegistryError(
                        f"store {s.store_id!r}: its Segment {kind} write key is already in use "
                        "(every write key must be unique across stores and kinds)"
                    )
                self._by_write_key[digest] = (s, kind)
        # Every store's origins in one index: a preflight costs its origin's labels, not the registry's size.
        self._origins = OriginSet.union(origin_set(store.allowed_origins) for store in stores)
        self._credentials: dict[str, PlatformCredentials] = {}
        self._development = True

    def read_credentials(
        self, *, development: bool, already: dict[str, PlatformCredentials] | None = None
    ) -> None:
        """Read every store's platform credentials from the environment or files the registry names. A
        missing one is not fatal here (ingest and the segmenter never use them): the notifier reports it
        per store, and skips what needs it as `coupon_unavailable`."""
        self._development = development
        for store in self._by_id.values():
            credentials = (already or {}).get(store.store_id) or read_platform_credentials(
                store, development=development
            )
            self._credentials[store.store_id] = credentials
            for problem in credentials.problems:
                log.warning("store_credentials_missing", store_id=store.store_id, problem=problem)

    def credentials(self, store_id: str) -> PlatformCredentials:
        found = self._credentials.get(store_id)
        if found is None:
            store = self._by_id.get(store_id)
            if store is None:
                return PlatformCredentials()
            found = read_platform_credentials(store, development=self._development)
            self._credentials[store_id] = found
        return found

    @classmethod
    def load(
        cls, path: Path, *, allow_placeholder_secrets: bool = True, production: bool | None = None
    ) -> StoreRegistry:
        """Read and check the registry; a StoreRegistryError lists every problem of every store.

        `production` (default: `not allow_placeholder_secrets`, which every service passes as
        ENVIRONMENT != production) adds the production rules: strong secrets, https only."""
        production = (not allow_placeholder_secrets) if production is None else production
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise StoreRegistryError(f"cannot read store registry {path}: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("stores"), dict):
            raise StoreRegistryError(f"{path}: expected a mapping `stores: {{<store_id>: ...}}`")
        stores: list[StoreConfig] = []
        problems: list[str] = []
        for store_id, body in document["stores"].items():
            if isinstance(body, dict) and isinstance(body.get("templates_dir"), str):
                body = {**body, "templates_dir": path.parent / body["templates_dir"]}
            try:
                stores.append(StoreConfig.model_validate({"store_id": store_id, **(body or {})}))
            except ValidationError as exc:
                problems.extend(
                    f"store {store_id!r}: {'.'.join(map(str, e['loc'])) or 'store'}: {e['msg']}"
                    for e in exc.errors()
                )
            except (TypeError, ValueError) as exc:
                problems.append(f"store {store_id!r}: {exc}")
        problems.extend(registry_problems(stores, production=production))
        credentials = {
            store.store_id: read_platform_credentials(store, development=not production) for store in stores
        }
        if production:
            for store_id, read in credentials.items():
                for name, secret in read.named():
                    problems.extend(secret_problems(f"store {store_id!r}: {name}", SecretFacts.of(secret)))
        if problems:
            listed = "\n".join(f"  - {problem}" for problem in problems)
            raise StoreRegistryError(f"{path}: {len(problems)} problem(s) in the store registry:\n{listed}")
        registry = cls(stores)
        registry.read_credentials(development=not production, already=credentials)
        return registry

    def adopt(self, other: StoreRegistry) -> None:
        """Take a freshly loaded registry's stores (a reload): everything holding this object sees them."""
        for name, value in vars(other).items():  # every index, one attribute at a time
            setattr(self, name, value)

    def get(self, store_id: str) -> StoreConfig | None:
        return self._by_id.get(store_id)

    def by_shop_domain(self, shop_domain: str) -> StoreConfig | None:
        return self._by_shop.get(shop_domain.strip().lower())

    def by_woocommerce_site(self, site_url: str) -> StoreConfig | None:
        return self._by_woo_site.get(_site_key(site_url))

    def by_write_key(self, write_key: str) -> StoreConfig | None:
        found = self._by_write_key.get(_digest(write_key))
        return found[0] if found else None

    def resolve_write_key(self, write_key: str) -> tuple[StoreConfig, WriteKeyKind] | None:
        """The store a Segment write key belongs to, and whether it is the store's server or browser key."""
        return self._by_write_key.get(_digest(write_key))

    def allows_origin_anywhere(self, origin: str) -> bool:
        """Whether any store lists `origin`: what a CORS preflight, which carries no write key, can check."""
        return self._origins.allows(origin)

    def __iter__(self) -> Iterator[StoreConfig]:
        return iter(self._by_id.values())


def registry_problems(stores: list[StoreConfig], *, production: bool) -> list[str]:
    """Problems across stores (in every environment: one value, one store) and of each store."""
    found = [problem for store in stores for problem in store.problems(production=production)]
    found += duplicates("API key", ((s.api_key_sha256, s.store_id) for s in stores))
    found += duplicates(
        "Shopify shop domain", ((s.shopify.shop_domain, s.store_id) for s in stores if s.shopify)
    )
    found += duplicates(
        "WooCommerce site",
        ((_site_key(s.woocommerce.site_url), s.store_id) for s in stores if s.woocommerce),
    )
    # Server and browser keys together: else one store's events would go to another, or the public key
    # pass for the secret one.
    write_keys = [
        (_digest(key).hex(), s.store_id)
        for s in stores
        if s.segment is not None
        for key in (s.segment.write_key.get_secret_value(), s.segment.browser_write_key)
        if key is not None
    ]
    found += duplicates("Segment write key", write_keys)
    return found


def _site_key(url: str) -> str:
    """WooCommerce sends its home URL with or without the trailing slash, in any case of host."""
    return url.strip().lower().rstrip("/")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
