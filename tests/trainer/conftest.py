"""The ``rig`` fixture: the queue in-process on real sockets (test_broker's Rig), shared by test_broker and
test_security."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def rig(tmp_path: Path):
    from .test_broker import Rig

    r = Rig(tmp_path)
    yield r
    r.close()
