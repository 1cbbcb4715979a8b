"""The session-wide Prefect test server, for the test folders whose flows need one.

A conftest imports the fixture (``from coala_testsupport.prefect import prefect_harness``); each folder that
does so registers it, and the first of them to run starts the server (a real one, on 127.0.0.1, through
Prefect's test harness) while the others reuse it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: set while a harness runs, so that another folder's copy of the fixture does not start a second one
HARNESS_RUNNING = "COALA_TEST_PREFECT_HARNESS"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server per session, shared by the test folders that need one (a second harness
    nested in the first loses the client's events: task runs never reach the server)."""
    from prefect.testing.utilities import prefect_test_harness

    if os.environ.get(HARNESS_RUNNING):  # started by another folder's conftest
        yield
        return
    with prefect_test_harness(server_startup_timeout=120):
        os.environ[HARNESS_RUNNING] = "1"
        try:
            yield
        finally:
            os.environ.pop(HARNESS_RUNNING, None)
