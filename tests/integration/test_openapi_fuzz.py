"""Schemathesis against the service's own OpenAPI document: no generated request may get a 5xx.

Its own server (the committed model, nothing shared), a fixed number of examples per operation, derandomized, and
bounded in time. The repository's load and unload operations are left out: they change what is served, and their
model-name handling is tested with them. Run: pytest tests/integration/test_openapi_fuzz.py
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from live_server import Server, start_server
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response

EXAMPLES_PER_OPERATION = 6
SERVED = {"model": "lenet5_digits", "version": "1"}
REQUEST_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own, serving the committed default model, so nothing the fuzzer sends reaches other tests."""
    running = start_server(None, tmp_path_factory.mktemp("fuzz") / "server.log", max_body_bytes=str(2**20))
    yield running
    assert running.stop() == 0, running.log()[-3000:]


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", wait_for_schema=30.0)


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=r"^/v2/repository/models/")


@pytest.mark.timeout(120)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same examples on every run
    database=None,
    deadline=None,  # the machine is shared: a slow example is not a failure, a 5xx is
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case, fuzz_server: Server) -> None:
    # The served model and version: a random name only ever meets the 404 of the lookup, never the handlers.
    if case.path_parameters:
        case.path_parameters = {name: SERVED.get(name, value) for name, value in case.path_parameters.items()}
    response = case.call(timeout=REQUEST_TIMEOUT_S)
    if _missed_its_own_deadline(case, response):
        return  # the documented answer to a deadline the client chose; whether it passes depends on the machine
    case.validate_response(response, checks=[not_a_server_error])


def _missed_its_own_deadline(case: schemathesis.Case, response: Response) -> bool:
    """A 504 ``deadline_exceeded`` to a request that set ``X-Request-Timeout-Ms``: the client's deadline passed.

    The fuzzer sends deadlines as short as a few microseconds; whether such a request is refused at once, expires in
    the queue, or completes in time depends on how fast the machine is at that moment, so it is no server error.
    Any other 5xx still fails, and so does a 504 to a request that set no deadline.
    """
    if response.status_code != 504 or not (case.headers or {}).get("X-Request-Timeout-Ms"):
        return False
    assert response.json()["code"] == "deadline_exceeded", response.text
    return True


def test_the_fuzzed_server_logged_no_traceback(fuzz_server: Server) -> None:
    assert "Traceback" not in fuzz_server.log(), fuzz_server.log()[-3000:]
