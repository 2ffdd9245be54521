"""Example payloads of every topic schema; every consumer's tests run each of them through its processor."""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent


def example_files(topic: str) -> list[Path]:
    return sorted((EXAMPLES_DIR / topic).glob("*.json"))
