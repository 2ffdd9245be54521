"""Platform credentials (Shopify Admin tokens, WooCommerce REST keys): named by the registry, not held in it.

A registry names where a secret lives: an environment variable (`..._env`) or a file (`..._file`, e.g. a
mounted Kubernetes or Docker secret). Production refuses anything else, so a token never sits in a YAML file
that ends up in a repository or a support ticket. In development only, the demo's variables fall back to the
documented demo values, so `make up` works on a fresh machine without exporting anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

# The demo store's credentials for the local test shop and site (deploy/platforms); development only.
DEVELOPMENT_DEFAULTS: Mapping[str, str] = {
    "DEMO_SHOPIFY_ADMIN_TOKEN": "demo-admin-token",
    "DEMO_WOO_KEY": "ck_demo_woo_key",
    "DEMO_WOO_SECRET": "cs_demo_woo_secret",
}


class CredentialError(ValueError):
    """A named credential cannot be read; the message names where it was looked for, never its value."""


def read_credential(
    env: str | None,
    file: Path | None,
    *,
    development: bool,
    environ: Mapping[str, str] | None = None,
) -> SecretStr | None:
    """The secret the registry names, or None when it names none. Raises CredentialError when it names one
    that is missing or empty: a store that should be connected must not silently act as if it were not."""
    source = os.environ if environ is None else environ
    if env:
        value = source.get(env, "")
        if not value and development:
            value = DEVELOPMENT_DEFAULTS.get(env, "")
        if not value.strip():
            raise CredentialError(f"environment variable {env} is not set")
        return SecretStr(value.strip())
    if file is not None:
        try:
            value = file.read_text().strip()
        except OSError as exc:
            raise CredentialError(f"cannot read credential file {file}: {exc.strerror}") from exc
        if not value:
            raise CredentialError(f"credential file {file} is empty")
        return SecretStr(value)
    return None
