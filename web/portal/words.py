"""Words the pool says as data (states, roles, reason codes, the usual sectors), marked
for the catalogs; templates translate them with _(value). A word missing here (a sector
of the pool's own) is shown as it is."""

from __future__ import annotations


def N_(message: str) -> str:
    return message


STATES = [
    N_("queued"),
    N_("admitted"),
    N_("running"),
    N_("succeeded"),
    N_("failed"),
    N_("cancelled"),
    N_("timeout"),
    N_("lost"),
    N_("preempted"),
    N_("requested"),
    N_("approved"),
    N_("active"),
    N_("expired"),
    N_("closed"),
    N_("denied"),
    N_("up"),
    N_("draining"),
    N_("down"),
]
ROLES = [N_("researcher"), N_("admin"), N_("operator"), N_("pi"), N_("member")]
SECTORS = [N_("industry"), N_("academia"), N_("research")]
# Why a job waits (scheduler.core.types.ReasonCode), in a few words; the loop's own
# sentence (in English, with the figures) follows it.
REASONS = {
    "capacity": N_("Waiting for free GPUs"),
    "reserved": N_("Next in line: GPUs are being held for it"),
    "backfill": N_("Waiting: starting now would delay the job next in line"),
    "reclaiming": N_("In quota: borrowed GPUs are being taken back for it"),
    "over_limit": N_("Over the project's limit"),
    "credits": N_("Not enough credits for its limit"),
    "project": N_("The project is not active"),
    "never_fits": N_("Can never fit in this pool"),
}
