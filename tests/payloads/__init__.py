"""Realistic storefront payloads, modelled on the platforms' documented samples, and their signing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAYLOADS_DIR = Path(__file__).resolve().parent


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS_DIR / name).read_text())
    return data
