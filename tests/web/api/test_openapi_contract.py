"""The OpenAPI schema tells the truth about errors: every status a route answers is
documented for it, and every error body the API sends is the documented one (web/api/errors.py).
The fuzzing of tests/web/api/test_schema_fuzz.py checks the same against a live server with
generated requests; these check it for the refusals known to happen, on every route."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.web.api.test_roles import OK, ROWS
from tests.web.conftest import Api
from web.models import ProjectUpdate, UserUpdate

ERROR_STATUSES = ("401", "403", "404", "409", "413", "422", "429", "503")


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    schema: dict[str, Any] = api.client.app.openapi()  # type: ignore[attr-defined]
    return schema


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def documented_body(document: dict[str, Any], method: str, path: str, status: int) -> Any:
    """A validator for the JSON body the schema documents for this answer."""
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} does not document {status}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    return Draft202012Validator(schema | {"components": document["components"]})


def assert_documented(
    document: dict[str, Any], method: str, route: str, response: httpx.Response
) -> dict[str, Any]:
    validator = documented_body(document, method, route, response.status_code)
    body: dict[str, Any] = response.json()
    errors = [error.message for error in validator.iter_errors(body)]
    assert not errors, (body, errors)
    return body


def test_every_error_is_documented_with_the_error_body(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's shape, which the API never sends
    assert schemas["ErrorBody"]["required"] == ["detail"]
    assert set(schemas["InvalidBody"]["required"]) == {"detail", "errors"}
    for method, path, operation in operations(document):
        responses = operation["responses"]
        for status in set(responses) & set(ERROR_STATUSES):
            schema = responses[status]["content"]["application/json"]["schema"]
            model = "InvalidBody" if status == "422" else "ErrorBody"
            assert schema == {"$ref": f"#/components/schemas/{model}"}, (method, path, status)
        if operation.get("security"):
            assert "401" in responses, f"{method} {path} needs a token: 401 undocumented"
        if "requestBody" in operation:
            assert {"413", "422"} <= set(responses), f"{method} {path} takes a body"


def test_every_answer_of_the_role_matrix_is_documented(document: dict[str, Any]) -> None:
    """tests/web/api/test_roles.py says what each route answers each kind of caller."""
    for row in ROWS:
        responses = document["paths"][row.route][row.method.lower()]["responses"]
        columns = ("admin", "operator", "pi", "member", "outsider", "anonymous", "bad_token")
        for column in columns:
            expected = row.expected(column)
            if expected == OK:
                assert any(code.startswith("2") for code in responses), row.id
            else:
                assert str(expected) in responses, f"{row.id}: {expected} for {column}"


def test_the_public_key_is_documented_as_what_it_is_served_as(
    api: Api, document: dict[str, Any]
) -> None:
    path = "/api/v1/statements/public-key"
    documented = document["paths"][path]["get"]["responses"]["200"]["content"]
    served = api.get(None, "/statements/public-key")
    assert served.status_code == 200
    media_type = served.headers["content-type"].split(";")[0]
    assert list(documented) == [media_type] == ["application/x-pem-file"]
    assert served.text.startswith("-----BEGIN PUBLIC KEY-----")


def test_refusals_are_the_documented_bodies(api: Api, document: dict[str, Any]) -> None:
    job = api.submit("bob")["id"]
    cases: list[tuple[str, str, int, httpx.Response]] = [
        ("GET", "/api/v1/projects", 401, api.get(None, "/projects")),
        ("GET", "/api/v1/projects", 401, api.get("<bad>", "/projects")),
        ("GET", "/api/v1/users", 403, api.get("alice", "/users")),
        ("GET", "/api/v1/projects/{name}", 404, api.get("carol", "/projects/p1")),
        ("POST", "/api/v1/jobs/{job_id}/cancel", 403, api.post("dave", f"/jobs/{job}/cancel")),
        ("POST", "/api/v1/jobs/{job_id}/cancel", 200, api.post("bob", f"/jobs/{job}/cancel")),
        ("POST", "/api/v1/jobs/{job_id}/cancel", 409, api.post("bob", f"/jobs/{job}/cancel")),
        (
            "POST",
            "/api/v1/users",
            409,
            api.post("admin", "/users", json={"name": "alice", "role": "researcher"}),
        ),
        (
            "POST",
            "/api/v1/projects",
            413,
            api.post(
                "alice", "/projects", content=b"x" * (api.pool.settings.max_request_bytes + 1)
            ),
        ),
        (  # p3's only PI made a plain member
            "POST",
            "/api/v1/projects/{name}/members",
            409,
            api.post("admin", "/projects/p3/members", json={"user": "erin", "role": "member"}),
        ),
        # Validation (pydantic's, several fields at once) and a service's own refusal.
        ("POST", "/api/v1/jobs", 422, api.post("alice", "/jobs", json={"gpus": "many"})),
        (
            "POST",
            "/api/v1/jobs",
            422,
            api.post("alice", "/jobs", json={"project": "zz", "entrypoint": "x", "gpus": 1}),
        ),
        ("GET", "/api/v1/jobs/{job_id}", 422, api.get("alice", "/jobs/0")),
        ("GET", "/api/v1/nodes", 422, api.get("alice", "/nodes?x=%00")),
    ]
    for method, route, status, response in cases:
        assert response.status_code == status, (route, response.text)
        if status == 200:
            continue
        body = assert_documented(document, method, route, response)
        if status == 422:
            assert body["errors"] and body["field"] == body["errors"][0]["field"], body
            assert body["detail"].startswith(f"{body['field']}: "), body


def test_a_body_that_is_not_utf8_is_refused_naming_the_body(
    api: Api, document: dict[str, Any]
) -> None:
    """FastAPI answers 400 "There was an error parsing the body", a status the schema did not
    list and a message naming nothing; JSON that does not parse is already a 422."""
    deeper_than_python_reads = b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for body in (b'{"name": "\xff\xfe"}', b"\xc3", deeper_than_python_reads):
        response = api.post(
            "alice", "/projects", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        refusal = assert_documented(document, "POST", "/api/v1/projects", response)
        assert refusal["field"] == "body"
        assert refusal["detail"] == (
            "body: must be JSON text in UTF-8, with arrays and objects nested at most a few "
            "hundred deep"
        )


def test_an_unknown_route_answers_the_error_body(api: Api) -> None:
    for response in (api.get("alice", "/no-such-thing"), api.request("alice", "PUT", "/jobs")):
        assert response.status_code in (404, 405)
        assert set(response.json()) == {"detail", "field"}


def test_a_resent_submission_answers_a_documented_200(api: Api, document: dict[str, Any]) -> None:
    body = {"project": "p1", "entrypoint": "python train.py", "gpus": 1}
    key = {"Idempotency-Key": "resend-1"}
    first = api.post("alice", "/jobs", json=body, headers=key)
    again = api.post("alice", "/jobs", json=body, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True
    assert_documented(document, "POST", "/api/v1/jobs", again)


def test_every_link_leads_to_an_operation_and_its_parameters(document: dict[str, Any]) -> None:
    found = 0
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                pointer = link["operationRef"].removeprefix("#/paths/")
                target_path, _, target_method = pointer.rpartition("/")
                target_path = target_path.replace("~1", "/").replace("~0", "~")
                target = document["paths"][target_path][target_method]
                parameters = {p["name"] for p in target.get("parameters", [])}
                assert set(link["parameters"]) <= parameters, (method, path, status, name)
                found += 1
    assert found >= 8  # a job's and a project's


def test_fields_that_refuse_null_are_not_documented_as_nullable(
    api: Api, document: dict[str, Any]
) -> None:
    """UserUpdate's role was documented as "Role or null", and null answered 422."""
    schemas = document["components"]["schemas"]
    inputs = {model.__name__: model for model in (UserUpdate, ProjectUpdate)}
    for name, model in inputs.items():
        assert model.not_null
        for field in model.not_null:
            documented = schemas[name]["properties"][field]
            assert "null" not in json.dumps(documented), (name, field, documented)
    refused = api.patch("admin", "/users/bob", json={"role": None})
    assert refused.status_code == 422
    assert_documented(document, "PATCH", "/api/v1/users/{name}", refused)


def test_a_body_that_is_not_json_is_refused_naming_the_body(api: Api) -> None:
    """The field was the parser's character offset ("0: JSON decode error (got {})")."""
    for path in ("/projects", "/nodes", "/users/alice/tokens"):
        refused = api.post(
            "admin", path, content=b"{'name': 1}", headers={"Content-Type": "application/json"}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "body"
        assert refused.json()["detail"].startswith("body: not valid JSON: "), refused.text
        assert "(at character 1)" in refused.json()["detail"]
    agent = api.post(None, "/agents/reports", content=b"{")
    assert agent.status_code == 401  # the token first, as before
