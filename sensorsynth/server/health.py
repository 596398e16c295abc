"""``/health``'s verdict: ``ok`` or ``degraded``, and why, from the status the server reports anyway.

An installation's monitoring (a cron job, Uptime Kuma, Nagios) wants one word, not forty fields. The verdict is
made from the status itself, so it can never say something the status does not show: the audio stopped
(``running`` false, ``error``), the sound card was given up for the null output (``fallback``), the recording
failed, or more than :data:`UNDERRUNS_PER_MINUTE` under-runs in the last minute (one now and then is a busy
machine, a stream of them is a problem a person should look at). The status holds no secrets: no token, no
admin token, nothing from the configuration but what plays.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable

UNDERRUNS_PER_MINUTE = 5
WINDOW_S = 60.0


class Health:
    """Keeps the under-run counts of the last minute (one reading a second at most) to judge a trend."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: collections.deque[tuple[float, int]] = collections.deque(maxlen=128)

    def check(self, status: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()
        underruns = int(status.get("underruns") or 0)
        if not self._seen or now - self._seen[-1][0] >= 1.0:
            self._seen.append((now, underruns))
        while len(self._seen) > 1 and now - self._seen[0][0] > WINDOW_S:
            self._seen.popleft()
        recent = underruns - self._seen[0][1]
        reasons = []
        if not status.get("running", True):
            reasons.append(f"audio stopped: {status.get('error') or 'the render thread is not running'}")
        if status.get("fallback"):
            reasons.append(f"sound card given up: {status['fallback']}")
        if (status.get("recording") or {}).get("failed"):
            reasons.append("the recording failed")
        if recent > UNDERRUNS_PER_MINUTE:
            reasons.append(f"{recent} under-runs in the last minute")
        return {"state": "degraded" if reasons else "ok", "reasons": reasons, "underruns_last_minute": recent}
