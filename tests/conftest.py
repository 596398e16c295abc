"""Markers that follow from what a test uses, so that a new test lands in the right lane without anyone
remembering to mark it (the lanes are in docs/contributing.md; the markers are registered in pyproject.toml):

- a test that takes the ``browser`` fixture is ``browser`` and ``slow``;
- one that takes the ``jack`` fixture is ``jack`` and ``slow``;
- one that starts a real server (``start_server``) is ``slow``;
- a case parametrized on the ``cuda`` device is ``cuda``, one on the ``jack`` output ``jack``.

Modules whose tests are all of one kind say so themselves, in ``pytestmark`` at their top.
"""

from __future__ import annotations

import pytest

_BY_FIXTURE = {
    "browser": ("browser", "slow"),
    "jack": ("jack", "slow"),
    "start_server": ("slow",),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set()
        for fixture, marks in _BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                names.update(marks)
        callspec = getattr(item, "callspec", None)
        params = [str(v) for v in callspec.params.values()] if callspec is not None else []
        if any(p.startswith("cuda") for p in params):
            names.add("cuda")
        if "jack" in params:
            names.add("jack")
        for name in sorted(names - {m.name for m in item.iter_markers()}):
            item.add_marker(getattr(pytest.mark, name))
