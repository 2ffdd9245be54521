"""Each storefront's calls and webhooks read and mapped to the canonical events.

Segment's reader and mapping (segment_reader.py, segment.py: most of ingest's CPU a Segment batch) and
Shopify's hand reader (shopify_reader.py) run compiled by mypyc when `make install` built them from these
very sources (shared/compiled.py); otherwise, interpreted as they are.
"""

from shared.compiled import use_compiled

use_compiled(__name__, __path__)
