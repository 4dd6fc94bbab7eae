"""Seed a pool from a cluster TOML (configs/pool.example.toml): flavors, nodes, sectors,
active projects with quotas and credits, users and memberships. Running it again adds
what is missing and changes nothing that exists."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session

from scheduler.sim.cluster import load_cluster
from scheduler.sim.errors import InputError
from web.models import (
    Flavor,
    MemberRole,
    Membership,
    Node,
    Project,
    ProjectState,
    Quota,
    Role,
    Sector,
    User,
)
from web.services.ledger import append


@dataclass(slots=True)
class Seeded:
    created: list[str] = field(default_factory=list)  # "kind:name" of each row added
    admins: list[str] = field(default_factory=list)


def seed_pool(session: Session, path: Path, now: float) -> Seeded:
    cluster = load_cluster(path)
    people = _people(path)
    seeded = Seeded()

    def add(kind: str, name: str, row: object) -> None:
        session.add(row)
        seeded.created.append(f"{kind}:{name}")

    for flavor in cluster.flavors:
        if session.get(Flavor, flavor) is None:
            add(
                "flavor",
                flavor,
                Flavor(name=flavor, credit_rate=cluster.credit_rates.get(flavor, 1.0)),
            )
    for node in cluster.nodes:
        if session.get(Node, node.name) is None:
            add(
                "node",
                node.name,
                Node(
                    name=node.name,
                    flavor=node.flavor,
                    gpus=node.gpus,
                    group=node.group,
                    registered_at=now,
                ),
            )
    for sector in cluster.sectors:
        if session.get(Sector, sector.name) is None:
            add("sector", sector.name, Sector(name=sector.name, weight=sector.weight))
    for person in people:
        if session.get(User, person.name) is None:
            user = User(
                name=person.name, full_name=person.full_name, role=person.role, created_at=now
            )
            add("user", person.name, user)
        if person.role == Role.ADMIN.value:
            seeded.admins.append(person.name)
    session.flush()
    pis = {p: u.name for u in people for p, r in u.projects.items() if r == "pi"}
    admin = seeded.admins[0] if seeded.admins else None
    for project in cluster.projects:
        if session.get(Project, project.name) is not None:
            continue
        pi = pis.get(project.name) or admin
        if pi is None:
            raise InputError(
                path,
                f"project {project.name} needs a PI: no [[users]] lists it as "
                "pi and there is no admin",
                field="users",
            )
        add(
            "project",
            project.name,
            Project(
                name=project.name,
                title=project.name,
                sector=project.sector,
                state=ProjectState.ACTIVE.value,
                pi=pi,
                credits=None,  # its grant goes through the ledger, below
                share=project.share,
                default_max_runtime_s=cluster.default_max_runtime_s,
                created_at=now,
                decided_by="seed",
                decided_at=now,
            ),
        )
        for flavor, quota in project.quotas.items():
            session.add(
                Quota(
                    project=project.name,
                    flavor=flavor,
                    guaranteed=quota.guaranteed,
                    limit=quota.limit,
                )
            )
    session.flush()
    append(
        session,
        [
            {
                "at": now,
                "kind": "grant",
                "project": p.name,
                "amount": p.credits_left,
                "actor": "seed",
                "note": f"seeded from {path.name}",
            }
            for p in cluster.projects
            if p.credits_left is not None and f"project:{p.name}" in seeded.created
        ],
    )
    members = {(p, u.name): r for u in people for p, r in u.projects.items()}
    # A project no user leads gets the first admin as PI: a member, as the PI always is.
    members |= {(p.name, pis.get(p.name) or admin): "pi" for p in cluster.projects if admin}
    for (project_name, member), role in members.items():
        if session.get(Membership, (project_name, member)) is None:
            session.add(Membership(project=project_name, user=member, role=role))
    return seeded


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    role: str
    full_name: str = ""
    projects: dict[str, str] = field(default_factory=dict)  # project -> "pi" | "member"


def _people(path: Path) -> list[Person]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    users = data.get("users", [])
    if not isinstance(users, list):
        raise InputError(path, "must be an array of tables ([[users]])", field="users")
    roles = [r.value for r in Role]
    member_roles = [m.value for m in MemberRole]
    people = []
    for i, user in enumerate(users):
        where = f"users[{i}]"
        if not isinstance(user, dict) or not isinstance(user.get("name"), str):
            raise InputError(path, "each user needs a name", field=f"{where}.name")
        if user.get("role") not in roles:
            raise InputError(
                path,
                f"must be one of {', '.join(roles)}, got {user.get('role')!r}",
                field=f"{where}.role",
            )
        projects = user.get("projects", {})
        if not isinstance(projects, dict) or any(r not in member_roles for r in projects.values()):
            raise InputError(
                path, 'must map project names to "pi" or "member"', field=f"{where}.projects"
            )
        people.append(
            Person(user["name"], user["role"], str(user.get("full_name", "")), dict(projects))
        )
    return people
