"""Operators' pages: utilization over time, the GPU grid per node, the queue with its
reasons, idle allocations, draining and undraining nodes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
