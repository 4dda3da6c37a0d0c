"""Role checks on every route, as a table: each route × {no token, bad token, revoked, annotator, admin}.

The tables (tests/test_security_projects.py) name the admin-only routes and those that need a project's lead;
the annotator here is an annotator of the example dataset's project. A new route is covered automatically,
and one whose behaviour disagrees with the tables fails here. Membership itself is tested there.
"""

from __future__ import annotations

import re

import pytest

from tests.test_security_projects import ADMIN_ONLY, LEAD_ONLY, operations

PUBLIC = {("GET", "/healthz")}


def api_routes(app) -> list[tuple[str, str]]:
    """Every operation the app serves, from its own OpenAPI schema (deleting the dataset last)."""
    return operations(app)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "psm" if "name" in m.group(0) else "999999", path)


def call(client, method: str, path: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    kwargs = {"json": {}} if method in ("POST", "PATCH", "PUT") else {}
    return client.request(method, concrete(path), headers=headers, **kwargs)


@pytest.fixture
def tokens(engine, admin_token, annotator_token):
    from db.auth import create_token, revoke_token
    from db.session import session_scope

    with session_scope(engine) as s:
        revoked = create_token(s, "revoked-user", "admin")
        revoke_token(s, revoked.token_id)
    return {
        "admin": admin_token,
        "annotator": annotator_token,
        "revoked": revoked.token,
        "bad": "aug_not-a-token",
        "none": None,
    }


def test_the_table_names_only_existing_routes(app):
    routes = set(api_routes(app))
    assert routes >= ADMIN_ONLY, ADMIN_ONLY - routes


def test_every_route_by_every_kind_of_caller(app, client, tokens, example_dataset):
    app.state.auth_limiter.per_minute = 10**6  # this test fails authentication on purpose, many times
    problems = []
    for method, path in api_routes(app):
        for who, token in tokens.items():
            code = call(client, method, path, token).status_code
            if (method, path) in PUBLIC:
                expected_ok = True
            elif who in ("none", "bad", "revoked"):
                expected_ok = code == 401
            elif who == "annotator" and (method, path) in ADMIN_ONLY:
                expected_ok = code == 403
            elif who == "annotator" and (method, path) in LEAD_ONLY:
                # the placeholder bodies and ids here may be refused first; with valid ones (the projects
                # table) the answer is 403
                expected_ok = code in (403, 404, 422)
            else:
                expected_ok = code not in (401, 403)
            if not expected_ok or code >= 500:
                problems.append(f"{method} {path} as {who}: {code}")
    assert not problems, "\n".join(problems)
