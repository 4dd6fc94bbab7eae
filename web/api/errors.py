"""The API's error answers: one body for every refusal and failure, and the OpenAPI schema's
account of which a route can give.

Every error is `{"detail": "...", "field": ...}`: `detail` a sentence a person can act on
(naming the field at fault first, as "field: what is wrong"), `field` the input at fault or
null. A 422 also lists each field at fault in `errors` (a request can get several wrong at
once). The schema documents, for each route, the statuses it can answer: those its
services raise (declared on the route with `refusals`) and those every route of a kind can
answer (`document_refusals`: 401 where a token is needed, 413 and 422 where there is a
body)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

DESCRIPTIONS = {
    401: "No valid token (missing, unknown, revoked or expired; or its user is deactivated)",
    403: "The caller's role does not allow this",
    404: "No such thing, or not one the caller may see (the two look the same)",
    409: "It exists already, or its state does not allow this",
    413: "The request body is over the limit",
    422: "Bad input: `errors` names each field at fault and what is allowed",
    429: "Too many failed attempts: wait as long as Retry-After says",
    503: "Something the pool depends on cannot answer now: try again later",
}


class FieldError(BaseModel):
    field: str = Field(
        description="The input at fault (a dotted path into the body, or a parameter)"
    )
    message: str = Field(description="What is wrong with it and what is allowed")


class ErrorBody(BaseModel):
    """A refused request, or a failure of the server's own."""

    detail: str = Field(description="What went wrong, for a person")
    field: str | None = Field(default=None, description="The input at fault, if one is")


class InvalidBody(ErrorBody):
    """Bad input (422)."""

    errors: list[FieldError] = Field(description="Each field at fault")


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses` for the error statuses it can answer."""
    return {
        code: {
            "model": InvalidBody if code == 422 else ErrorBody,
            "description": DESCRIPTIONS[code],
        }
        for code in codes
    }


def document_refusals(document: dict[str, Any]) -> None:
    """Add to an OpenAPI document what every operation of a kind can answer: 401 where it
    needs a token, 413 and 422 where it takes a body; and make every 422 the body the API
    sends (FastAPI documents its own default shape, which this API does not send)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, InvalidBody, FieldError):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        schemas[model.__name__] = schema
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            codes = {401} if operation.get("security") else set()
            if "requestBody" in operation:
                codes |= {413, 422}
            if "422" in responses:
                codes.add(422)  # replaced: FastAPI's default 422 is not what is sent
            for code, spec in refusals(*sorted(codes)).items():
                responses[str(code)] = {
                    "description": spec["description"],
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{spec['model'].__name__}"}
                        }
                    },
                }
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
