"""The express sender: transactional messages (a welcome, a support alert) that become due while the main
sender is busy with a claim go out beside that claim, not after it.

The main sender works a claim at a time (a batch of due messages, transactional first, in one lane per SMTP
connection) and looks for new messages only once every lane of it finished: a welcome planned just after a
claim of 50 waited for about a dozen messages per lane, most of them marketing. The express sender claims
only transactional messages, and only while the main sender is sending; it shares the main sender's SMTP
connections (a welcome waits for the next free one, about one message), and its claims are ordinary claims
(lease, lanes, Message-ID, settlement after a crash), as those of a second notifier process would be. When
the main sender is idle it does nothing: the main sender then takes every due message itself, as before. It
never settles the expired claims of others; the main sender does that.
"""

from __future__ import annotations

from typing import Any

from services.notifier.entrypoints.sender import MessageSender


class ExpressSender(MessageSender):
    def __init__(self, *, main: MessageSender, **kwargs: Any) -> None:
        super().__init__(**kwargs, transactional_only=True, name="express-sender")
        self._main = main
        # A message that became due while the main sender was claiming missed that claim; look at once.
        main.when_sending(self.wake)

    async def send_due(self) -> int:
        if not self._main.sending:
            return 0
        return await self.claim_and_send()
