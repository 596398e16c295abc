"""The adapters are tested against a real ``sensorsynth serve`` process, as the server tests are."""

from tests.server.conftest import launch, start_server  # noqa: F401
