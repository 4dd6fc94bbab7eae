"""Posted forms: the fields as typed (kept, to show again), the CSRF check, and errors per
field in the page's language.

A view reads the form, turns it into the same input model the API takes (JobCreate, ...),
and calls the same service. What pydantic or the service refuses comes back here as errors
on the fields they name; the view shows the form again with them, and with what the user
typed. Pydantic's messages are English; the common ones are said again in the page's
language from their error type and limits, the rest (and the services' own messages,
which name the allowed values) are shown after a translated lead.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request

from web.services.errors import ServiceError

Gettext = Callable[[str], str]
CSRF_FIELD = "csrf_token"
FORM = ""  # errors about the whole form, not one field


@dataclass
class Form:
    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def all(self, name: str) -> list[str]:
        return self.lists.get(name, [])

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def refuse(
        self, err: ValidationError | ServiceError, _: Gettext, rename: Mapping[str, str] = {}
    ) -> None:
        """Errors from an input model or a service, on the form's fields (`rename` maps
        the model's field names to the form's where they differ)."""
        if isinstance(err, ValidationError):
            for problem in err.errors():
                where = ".".join(str(p) for p in problem.get("loc", ()))
                name = rename.get(where.split(".")[0], where.split(".")[0]) if where else FORM
                self.error(name, validation_message(problem, _))
        else:
            name = rename.get(err.field, err.field) if err.field else FORM
            if name and name not in self.values and name not in self.lists:
                name = FORM  # a field this form does not show: say it above the form
                self.error(name, service_message(err, _, err.field))
            else:
                self.error(name, service_message(err, _, ""))


async def read_form(request: Request, csrf: str, _: Gettext) -> Form:
    """The posted fields; an error on the whole form if its CSRF token is not the
    session's (a form from another site, or one older than the session)."""
    data: FormData = await request.form()
    form = Form()
    for name, value in data.multi_items():
        if isinstance(value, str):
            form.lists.setdefault(name, []).append(value)
            form.values.setdefault(name, value)
    sent = form.values.pop(CSRF_FIELD, "")
    form.lists.pop(CSRF_FIELD, None)
    if not sent or not hmac.compare_digest(sent.encode(), csrf.encode()):
        form.error(
            FORM,
            _(
                "This form has expired or did not come from this site. Nothing was changed: "
                "check the fields and send it again."
            ),
        )
    return form


def validation_message(problem: Mapping[str, Any], _: Gettext) -> str:
    kind = str(problem.get("type", ""))
    ctx = problem.get("ctx") or {}
    limits: dict[str, Any] = {k: _plain(v) for k, v in ctx.items()}
    said = {
        "missing": _("Required."),
        "string_too_short": _("Required.")
        if limits.get("min_length") == 1
        else _("At least %(min_length)s characters.") % limits
        if "min_length" in limits
        else "",
        "string_too_long": _("At most %(max_length)s characters.") % limits
        if "max_length" in limits
        else "",
        "greater_than_equal": _("Must be at least %(ge)s.") % limits if "ge" in limits else "",
        "greater_than": _("Must be more than %(gt)s.") % limits if "gt" in limits else "",
        "less_than_equal": _("Must be at most %(le)s.") % limits if "le" in limits else "",
        "less_than": _("Must be less than %(lt)s.") % limits if "lt" in limits else "",
        "int_parsing": _("Must be a whole number."),
        "int_from_float": _("Must be a whole number."),
        "float_parsing": _("Must be a number."),
        "finite_number": _("Must be a finite number."),
        "enum": _("Must be one of: %(expected)s.") % limits if "expected" in limits else "",
        "literal_error": _("Must be one of: %(expected)s.") % limits
        if "expected" in limits
        else "",
        "datetime_from_date_parsing": _("Must be a date and time (YYYY-MM-DD HH:MM)."),
        "datetime_parsing": _("Must be a date and time (YYYY-MM-DD HH:MM)."),
        "bool_parsing": _("Must be yes or no."),
    }.get(kind, "")
    if said:
        return said
    message = str(problem.get("msg", "")).removeprefix("Value error, ")
    return _("Not accepted: %(reason)s") % {"reason": message}


def service_message(err: ServiceError, _: Gettext, field_name: str) -> str:
    """A service's refusal after a translated lead (its text names what is allowed)."""
    if field_name:
        return _("%(field)s not accepted: %(reason)s") % {
            "field": field_name,
            "reason": err.message,
        }
    return _("Not accepted: %(reason)s") % {"reason": err.message}


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | float | str) else str(value)


def blank_to_none(values: Mapping[str, str], names: Iterable[str]) -> dict[str, Any]:
    """The named fields as an input model takes them: stripped, and left out when blank
    (so the model's default applies)."""
    taken: dict[str, Any] = {}
    for name in names:
        value = values.get(name, "").strip()
        if value:
            taken[name] = value
    return taken
