"""The source samples of shared/examples, as the tests read them (one copy of each, not two).

Samples every mapper must handle live in shared/examples/sources/<source>/<topic>__<name>.json (the topic's
'/' written as '.'), modelled on the platforms' documented samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.examples import EXAMPLES_DIR

SOURCES_DIR = EXAMPLES_DIR / "sources"


def source_example(source: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SOURCES_DIR / source / f"{name}.json").read_text())
    return data


def source_examples(source: str) -> list[tuple[str, Path]]:
    """(topic or call kind, file) for every example of a source, the topic taken from the file name."""
    return [
        (p.stem.split("__")[0].replace(".", "/") if source == "shopify" else p.stem.split("__")[0], p)
        for p in sorted((SOURCES_DIR / source).glob("*.json"))
    ]
