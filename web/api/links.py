"""OpenAPI links: which operations take what an answer returns (a new job's id, a new
project's name), for clients and for the stateful schema fuzzing of
tests/web/api/test_schema_fuzz.py, which follows them to chain requests."""

from __future__ import annotations

from typing import Any

API = "/api/v1"


def follow(path: str, method: str, **parameters: str) -> dict[str, Any]:
    """A link to the operation `method` `path` (under /api/v1), its parameters taken from
    the answer by runtime expressions such as "$response.body#/jobs/0/id"."""
    pointer = (API + path).replace("~", "~0").replace("/", "~1")
    return {"operationRef": f"#/paths/{pointer}/{method}", "parameters": parameters}


def job_links(job_id: str) -> dict[str, Any]:
    """What can be done with a job whose id the answer holds at `job_id`."""
    return {
        "GetJob": follow("/jobs/{job_id}", "get", job_id=job_id),
        "CancelJob": follow("/jobs/{job_id}/cancel", "post", job_id=job_id),
        "JobLogs": follow("/jobs/{job_id}/logs", "get", job_id=job_id),
        "JobUsage": follow("/jobs/{job_id}/usage", "get", job_id=job_id),
    }


def project_links(name: str) -> dict[str, Any]:
    """What can be done with a project whose name the answer holds at `name`."""
    return {
        "GetProject": follow("/projects/{name}", "get", name=name),
        "UpdateProject": follow("/projects/{name}", "patch", name=name),
        "DecideProject": follow("/projects/{name}/{action}", "post", name=name),
        "AddMember": follow("/projects/{name}/members", "post", name=name),
        "SetQuota": follow("/projects/{name}/quotas/{flavor}", "put", name=name),
        "ChangeCredits": follow("/projects/{name}/credits", "post", name=name),
        "ProjectHistory": follow("/projects/{name}/history", "get", name=name),
        "ProjectCredits": follow("/projects/{name}/credits", "get", name=name),
    }
