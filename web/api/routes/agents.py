"""What node agents send: their reports (with the node's own token)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from agents.schema import ReportAck, ReportBatch
from web.api.deps import CurrentNode, PoolDep

router = APIRouter(prefix="/agents", tags=["agents"])


@router.post("/reports", response_model=ReportAck)
async def report(batch: ReportBatch, node: CurrentNode, pool: PoolDep) -> ReportAck:
    """Take a batch of one node's reports (oldest first). Answered once they are stored;
    reports taken before (same boot, seq at or below the last taken) are acknowledged and
    not counted again, so an agent resends whatever got no answer."""
    future = pool.telemetry.submit(node, batch, pool.clock.now())
    return await asyncio.wrap_future(future)
