"""Waiting on a page's state without ``page.wait_for_function``: Playwright evaluates that predicate inside the
page with ``eval``, which the pages' Content-Security-Policy (``script-src 'self'``, no ``'unsafe-eval'``)
forbids, as it should. ``page.evaluate`` goes through the DevTools protocol instead, so the tests run the pages
under their real CSP."""

from __future__ import annotations

import time


def wait_js(page, expression: str, timeout: float = 30_000, every_s: float = 0.05):
    """Poll ``expression`` (a JavaScript expression or function) until it is truthy; its value. ``timeout`` in
    milliseconds, as Playwright's own."""
    deadline = time.monotonic() + timeout / 1000
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout / 1000:g} s: {expression}")
        time.sleep(every_s)
