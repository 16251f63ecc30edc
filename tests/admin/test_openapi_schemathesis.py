"""schemathesis against the generated openapi.json of a running gateway: generated requests to
every operation (bounded), no 5xx, and every answer's status, content type and body as the
document says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.admin.support import ADMIN_CONFIG, AUTH, post_finchpay
from tests.service.harness import GatewayProcess
from tests.support import TOKEN

MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(Path(tmp_path_factory.mktemp("schemathesis")), ADMIN_CONFIG).start()
    # Something to find: events, a quarantined payload.
    for number in range(3):
        post_finchpay(process, f"pay_st_{number}", "COMPLETE" if number % 2 else "ERROR")
    bad = b'{"message":"Account Credited","identifier":"ACCOUNT_CREDITED","code":"3023"}'
    process.post("lifecycle", bad, params={"token": TOKEN})
    yield process
    process.stop()


def test_every_operation_answers_as_documented(gateway: GatewayProcess) -> None:
    document = httpx.get(
        f"{gateway.base_url}/admin/api/openapi.json", headers=AUTH, timeout=10
    ).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12
    for operation in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=gateway.base_url, headers=AUTH, checks=CHECKS)

        check()
    assert "Traceback" not in gateway.logs()
