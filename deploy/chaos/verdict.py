"""What a chaos run found, from the facts it gathered: pure functions, no I/O.

- lost: events ingest acknowledged (2xx) that the segmenter never recorded as processed;
- duplicate transitions: one event recorded the same transition twice;
- duplicate messages: a recipient got more distinct messages of a flow than the notifier has keys for it
  that may have been handed over. Message-IDs count, not deliveries: a resend of an unknown-fate message
  under the same Message-ID (which a mailbox shows once) is not a duplicate, another Message-ID is;
- dead letters: messages on any `<topic>.dlq`;
- faults: how long the stack took to be ready again after each SIGKILL.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_CAMPAIGN = re.compile(r"utm_campaign=([A-Za-z0-9_\-]+)")
UNKNOWN_FLOW = "?"


@dataclass(frozen=True)
class Email:
    """One message the SMTP sink received."""

    recipient: str
    message_id: str
    flow: str
    subject: str = ""


def flow_of(body: str) -> str:
    """The flow a message belongs to, from the UTM campaign its links carry (every template links)."""
    found = _CAMPAIGN.search(body)
    return found.group(1) if found else UNKNOWN_FLOW


def lost_events(acknowledged: Iterable[str], processed: set[str]) -> list[str]:
    """Acknowledged event ids without a processed record, in acknowledgement order, each once."""
    seen: set[str] = set()
    lost = []
    for event_id in acknowledged:
        if event_id not in processed and event_id not in seen:
            lost.append(event_id)
        seen.add(event_id)
    return lost


def duplicate_messages(
    emails: Iterable[Email], handed_over: Mapping[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """(recipient, flow) -> messages beyond what the notifier may have handed over for it.

    handed_over: per (recipient, flow), the notifier's message keys that may have reached the server
    (sent, or claimed and of unknown fate). A message of an unknown flow counts against its recipient's
    total over all flows."""
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for email in emails:
        ids[(email.recipient.lower(), email.flow)].add(email.message_id)
    keys = {(recipient.lower(), flow): n for (recipient, flow), n in handed_over.items()}
    excess = {}
    for (recipient, flow), found in ids.items():
        if flow == UNKNOWN_FLOW:
            allowed = sum(n for (r, _), n in keys.items() if r == recipient)
            known = sum(len(v) for (r, f), v in ids.items() if r == recipient and f != UNKNOWN_FLOW)
            extra = len(found) + known - allowed
        else:
            extra = len(found) - keys.get((recipient, flow), 0)
        if extra > 0:
            excess[(recipient, flow)] = extra
    return excess


def fault_times(duration: float, faults: int) -> list[float]:
    """Seconds after the load starts at which each fault is injected: evenly spread, none at the edges."""
    if faults <= 0:
        return []
    step = duration / (faults + 1)
    return [round(step * (i + 1), 3) for i in range(faults)]


@dataclass(frozen=True)
class Fault:
    component: str
    at: float  # seconds after the load started
    ready_after: float | None  # seconds from the kill until everything answered ready again; None: never
    restarts: int = 0  # how many times the supervisor restarted it in the whole run


@dataclass
class Findings:
    acknowledged_requests: int
    acknowledged_events: int
    lost: list[str]
    duplicate_transitions: int
    duplicate_messages: dict[tuple[str, str], int]
    dead_letters: dict[str, int]
    faults: list[Fault]
    refused: int = 0  # requests ingest refused for good (4xx): a bug in the payloads or in ingest
    emails: int = 0
    # Messages a crash left claimed and unfinished: not sent again (at most once), so maybe never sent.
    unknown_fate: int = 0
    settled: bool = True
    ready_limit: float = 120.0
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Every way the run went wrong, in words; empty when it passed."""
        found = []
        if self.acknowledged_events == 0:
            found.append("nothing was acknowledged: the load never got through")
        if self.lost:
            found.append(f"{len(self.lost)} acknowledged events lost")
        if self.duplicate_transitions:
            found.append(f"{self.duplicate_transitions} duplicate transitions")
        if self.duplicate_messages:
            found.append(f"{sum(self.duplicate_messages.values())} duplicate messages")
        if sum(self.dead_letters.values()):
            found.append(f"{sum(self.dead_letters.values())} dead letters")
        if self.refused:
            found.append(f"{self.refused} requests refused by ingest (4xx)")
        for fault in self.faults:
            if fault.ready_after is None or fault.ready_after > self.ready_limit:
                found.append(f"not ready within {self.ready_limit:.0f} s after killing {fault.component}")
        if not self.settled:
            found.append("the pipeline did not catch up with what was acknowledged")
        return found
