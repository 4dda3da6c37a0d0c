"""schemathesis against the app's own OpenAPI schema, authenticated as an admin, on every route:
no 5xx, and every response (status, content type, body) matches the schema.

The operations are driven with Hypothesis directly (schemathesis' pytest plugin does not load under pytest 9).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 20


def test_every_operation_conforms_to_the_schema(app, admin_token, example_dataset):
    app.state.auth_limiter.per_minute = 10**6
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {admin_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    tried = []
    for operation in operations:
        if operation.method.upper() == "DELETE":
            continue  # deleting the dataset would leave the other operations nothing to work on

        @hsettings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def check(case):
            if "revoke" in case.path:
                case.path_parameters = {"token_id": 10**9}  # keep the token this test authenticates with
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
        tried.append(f"{operation.method.upper()} {operation.path}")
    assert any("import" in t for t in tried)
