"""Role checks on every route, as a table: each route × {no token, bad token, revoked, annotator, admin}.

The table below names the admin-only routes; every other /api/v1 route is open to annotators. A new route is
covered automatically, and one whose behaviour disagrees with the table fails here.
"""

from __future__ import annotations

import re

import pytest

ADMIN_ONLY = {
    ("POST", "/api/v1/datasets/{name}/import"),
    ("PATCH", "/api/v1/datasets/{name}"),
    ("DELETE", "/api/v1/datasets/{name}"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens/{token_id}/revoke"),
    ("GET", "/api/v1/workers"),
    ("PATCH", "/api/v1/users/{name}"),
    ("POST", "/api/v1/projects"),
    ("GET", "/api/v1/projects/{name}/members"),
    ("PUT", "/api/v1/projects/{name}/members"),
    ("DELETE", "/api/v1/projects/{name}/members/{user}"),
}
PUBLIC = {("GET", "/healthz")}


def api_routes(app) -> list[tuple[str, str]]:
    """Every operation the app serves, from its own OpenAPI schema."""
    return sorted((method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops)


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
    return {"admin": admin_token, "annotator": annotator_token, "revoked": revoked.token, "bad": "aug_not-a-token",
            "none": None}


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
            else:
                expected_ok = code not in (401, 403)
            if not expected_ok or code >= 500:
                problems.append(f"{method} {path} as {who}: {code}")
    assert not problems, "\n".join(problems)
