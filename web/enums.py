"""The control plane's named states and roles. Kept apart from the models so that the
command line can use them without loading the database layer."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    RESEARCHER = "researcher"
    ADMIN = "admin"
    OPERATOR = "operator"


class MemberRole(StrEnum):
    PI = "pi"
    MEMBER = "member"


class ProjectState(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    ACTIVE = "active"
    EXPIRED = "expired"
    CLOSED = "closed"


class JobState(StrEnum):
    QUEUED = "queued"
    ADMITTED = "admitted"  # GPUs assumed; being handed to the dispatcher
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    LOST = "lost"


ACTIVE_JOB_STATES = (JobState.ADMITTED, JobState.RUNNING)
FINAL_JOB_STATES = (
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.TIMEOUT,
    JobState.LOST,
)
# The same, as the strings the database stores (for queries and comparisons with rows).
ACTIVE_JOB_STATE_VALUES: tuple[str, ...] = tuple(s.value for s in ACTIVE_JOB_STATES)
FINAL_JOB_STATE_VALUES: tuple[str, ...] = tuple(s.value for s in FINAL_JOB_STATES)


class NodeStateName(StrEnum):
    UP = "up"
    DRAINING = "draining"
    DOWN = "down"
