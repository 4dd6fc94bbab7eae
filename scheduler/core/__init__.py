"""The allocation core: snapshot in, decisions out. Standard library only; no I/O, no clock.

plan(snapshot, policy, now) -> Plan          one cycle from scratch (pure)
SchedulerState(snapshot, policy)             the same, kept up to date between cycles
run_cycle(state, now) -> Plan                one cycle over it, assumed into it
"""

from scheduler.core.cycle import run_cycle
from scheduler.core.policy import CreditsExhausted, Ordering, Policy
from scheduler.core.state import SchedulerState
from scheduler.core.types import (
    ANY_FLAVOR,
    Admission,
    FlavorQuota,
    Job,
    Node,
    NodeState,
    Plan,
    Preemption,
    Project,
    Reason,
    ReasonBook,
    ReasonCode,
    Reservation,
    Running,
    Sector,
    Snapshot,
    StartForecast,
)


def plan(snapshot: Snapshot, policy: Policy, now: float) -> Plan:
    """One full scheduling cycle over a snapshot. Same snapshot, same plan."""
    return run_cycle(SchedulerState(snapshot, policy), now)


__all__ = [
    "ANY_FLAVOR",
    "Admission",
    "CreditsExhausted",
    "FlavorQuota",
    "Job",
    "Node",
    "NodeState",
    "Ordering",
    "Plan",
    "Policy",
    "Preemption",
    "Project",
    "Reason",
    "ReasonBook",
    "ReasonCode",
    "Reservation",
    "Running",
    "SchedulerState",
    "Sector",
    "Snapshot",
    "StartForecast",
    "plan",
    "run_cycle",
]
