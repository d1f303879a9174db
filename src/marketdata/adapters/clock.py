"""The Clock port on the event loop's monotonic clock."""

import asyncio
import time

from marketdata.domain.replay import Wake


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float, wake: Wake) -> None:
        # A timer that sets `wake` instead of a task per sleep: cheap with many sessions.
        delay = deadline - time.monotonic()
        if delay <= 0 or wake.is_set():
            return
        timer = asyncio.get_running_loop().call_later(delay, wake.set)
        try:
            await wake.wait()
        finally:
            timer.cancel()
