"""The gateway websocket: HELLO, IDENTIFY, READY, GUILD_CREATE, heartbeats and dispatches."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .emulator import DiscordEmulator

GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT = 1 << 1, 1 << 8, 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


class GatewaySession:
    """One client websocket connection and its sequence counter."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session_id = secrets.token_hex(16)
        self.seq = 0
        self.intents = 0
        self.ready = False  # READY and GUILD_CREATEs were sent (stays True after close)
        self.closed = False
        self.received: list[dict[str, Any]] = []  # every frame the client sent
        # Sequence numbers must reach the client in order, so number and send under one lock.
        self._lock = asyncio.Lock()

    async def send(self, op: int, d: Any, t: str | None = None) -> None:
        """Send one frame; dispatches (op 0) get the next sequence number."""
        async with self._lock:
            seq = None
            if op == 0:
                self.seq += 1
                seq = self.seq
            await self.ws.send_str(json.dumps({"op": op, "d": d, "s": seq, "t": t}))


async def handle_gateway(emu: DiscordEmulator, request: web.Request) -> web.WebSocketResponse:
    """Serve one gateway connection until the client leaves."""
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    session = GatewaySession(ws)
    emu.sessions.append(session)
    try:
        await session.send(10, {"heartbeat_interval": emu.heartbeat_interval_ms})
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                continue  # discord.py only sends text; binary would be zlib, never negotiated
            msg = json.loads(frame.data)
            session.received.append(msg)
            op = msg.get("op")
            if op == 1:
                await session.send(11, None)
            elif op == 2:
                await _identify(emu, session, msg["d"])
            elif op == 6:
                # Resuming would need an event replay buffer; Discord may refuse too.
                # discord.py then closes and identifies afresh.
                await session.send(9, False)
    finally:
        session.closed = True
        emu._changed()
    return ws


async def _identify(emu: DiscordEmulator, session: GatewaySession, d: dict[str, Any]) -> None:
    """Check the token and intents, then send READY and one GUILD_CREATE per guild."""
    if d.get("token") != emu.bot_user.token:
        await session.ws.close(code=4004, message=b"Authentication failed.")
        return
    session.intents = int(d.get("intents", 0))
    if session.intents & PRIVILEGED_INTENTS & ~emu.privileged_intents:
        await session.ws.close(code=4014, message=b"Disallowed intent(s).")
        return
    bot = emu.bot_user
    await session.send(
        0,
        {
            "v": 10,
            "user": {**bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in emu.guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": emu.gateway_url,
            "application": {"id": str(emu.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "shard": d.get("shard", [0, 1]),
        },
        "READY",
    )
    for guild in emu.guilds.values():
        # Without GUILD_MEMBERS Discord only sends the bot's own member.
        only = None if session.intents & GUILD_MEMBERS else {bot.id}
        await session.send(0, guild.payload(member_ids=only), "GUILD_CREATE")
    session.ready = True
    emu._changed()
