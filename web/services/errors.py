"""What services raise. They know nothing of HTTP; the API maps these to status codes."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the pool refuses, with a message a person can act on."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field  # the input field at fault, if one is

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class Invalid(ServiceError):
    """Bad input: names the field and what is allowed."""


class NotFound(ServiceError):
    """No such thing, or not one the caller may see (the two look the same on purpose)."""


class Forbidden(ServiceError):
    """The caller's role does not allow this."""


class Conflict(ServiceError):
    """The thing exists already, or is in a state that does not allow this."""


class Unauthenticated(ServiceError):
    """No valid token."""


class TooManyAttempts(ServiceError):
    """Too many failed password checks from here or for this account: wait and retry."""

    def __init__(self, retry_after_s: int, field: str = "") -> None:
        super().__init__(f"too many failed attempts; try again in {retry_after_s} s", field=field)
        self.retry_after_s = retry_after_s


class Unavailable(ServiceError):
    """Something the pool depends on (Ray, say) cannot answer now; try again later."""


class Busy(Unavailable):
    """As many of these are running as the server allows at once: retry after a while."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
