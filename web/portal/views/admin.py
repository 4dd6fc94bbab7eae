"""Administrators' pages: project requests and decisions, quotas and credits with their
history, sectors, users, roles and tokens."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
