"""The adapters are tested against a real ``sensorsynth serve`` process, as the server tests are."""

from tests.server.conftest import start_server  # noqa: F401 - the fixture
from tests.server.helpers import launch  # noqa: F401
