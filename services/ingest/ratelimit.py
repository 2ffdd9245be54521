"""Per-store rate limiting uses the shared token bucket (shared/ratelimit.py); kept importable from here."""

from __future__ import annotations

from shared.ratelimit import RateLimiter

__all__ = ["RateLimiter"]
