"""30 connect/disconnect cycles leave no growing number of threads, tasks, fds or peers.

Half the clients say goodbye (``DELETE``), half just vanish (close their peer connection): the
server must notice the connection closing and clean up the session itself.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import aiohttp
from aiortc import RTCPeerConnection

from realtime.server import K_STATE
from server_harness import connect, serving

CYCLES = 30


def _census() -> dict[str, int]:
    gc.collect()
    return {
        "threads": threading.active_count(),
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        "peers": sum(type(o) is RTCPeerConnection for o in gc.get_objects()),  # type(): dead weakproxies raise on isinstance
    }


async def _wait(cond, timeout: float = 5.0) -> bool:  # noqa: ANN001
    for _ in range(int(timeout / 0.05)):
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


def test_connect_disconnect_cycles_do_not_leak(engine) -> None:
    async def go() -> tuple[list[dict[str, int]], list[int]]:
        censuses, leftovers = [], []
        async with serving(engine, max_sessions=2) as (base, app):
            state = app[K_STATE]
            async with aiohttp.ClientSession() as http:
                for i in range(CYCLES):
                    client = await connect(base, http, keep_frames=False)
                    assert await _wait(lambda: len(client.video) >= 2), "no video arrived"
                    if i % 2:
                        async with http.delete(f"{base}/api/sessions/{client.session_id}") as r:
                            assert r.status == 200
                    await client.close()
                    assert await _wait(lambda: not state.sessions), f"cycle {i}: session not cleaned up"
                    await _wait(lambda: len(state.loop) == 0)  # the end event applies on the next tick
                    leftovers.append(len(state.loop))
                    if i in (4, CYCLES - 1):
                        await asyncio.sleep(0.3)  # let aiortc's closing tasks finish
                        censuses.append(_census())
        return censuses, leftovers

    (warm, end), leftovers = asyncio.run(go())
    assert set(leftovers) == {0}, "sessions left in the frame loop"
    assert end["threads"] <= warm["threads"] + 2, (warm, end)
    assert end["tasks"] <= warm["tasks"] + 3, (warm, end)
    assert end["fds"] <= warm["fds"] + 4, (warm, end)
    assert end["peers"] <= warm["peers"] + 1, (warm, end)
