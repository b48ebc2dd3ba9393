"""The emulator: world building, the aiohttp server, and the API tests drive it with."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import discord.gateway
import discord.http
import yarl
from aiohttp import web

from .gateway import MESSAGE_CONTENT, GatewaySession, handle_gateway
from .mentions import compute_pings
from .models import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    DEFAULT_PERMISSIONS,
    MENTION_EVERYONE,
    SEND_MESSAGES,
    Channel,
    Guild,
    Interaction,
    Json,
    Member,
    Message,
    Revision,
    Role,
    User,
    snowflake,
)
from .ratelimit import DEFAULT_LIMITS, Limit, RateLimiter, RateLimitHit
from .rest import API, RestApi, json_response

T = TypeVar("T")


class DiscordEmulator:
    """A loopback Discord (REST + gateway) that a real discord.py client can connect to."""

    def __init__(
        self,
        *,
        rate_limits: Mapping[str, Limit] | None = None,
        interaction_timeout: float = 3.0,
        heartbeat_interval_ms: int = 41250,
        privileged_intents: int = 0,
    ) -> None:
        self.limits: dict[str, Limit] = {**DEFAULT_LIMITS, **(rate_limits or {})}
        self.ratelimiter = RateLimiter(self.limits)
        self.interaction_timeout = interaction_timeout
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.privileged_intents = privileged_intents  # intents "enabled in the Developer Portal"
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.commands: dict[int | None, list[Json]] = {}  # guild id (None: global) -> commands
        self.interactions: dict[int, Interaction] = {}
        self.tokens: dict[str, Interaction] = {}
        self.forbidden_channels: set[int] = set()  # the bot gets 403 50013 when posting here
        self.typing: Counter[int] = Counter()  # channel id -> typing triggers
        self.requests: list[str] = []  # "METHOD /path" of every REST request
        self.unknown_routes: list[str] = []
        self.sessions: list[GatewaySession] = []
        self.bot_user = self.add_user("emubot", bot=True)
        self.bot_user.token = f"emu.{secrets.token_urlsafe(24)}"
        self.application_id = self.bot_user.id
        self.owner = self.add_user("owner")
        self.port = 0
        self._log: defaultdict[int, list[Message]] = defaultdict(list)
        self._last_user_message: dict[int, Message] = {}
        self._dms: dict[int, Channel] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._runner: web.AppRunner | None = None
        self.files: dict[int, bytes] = {}  # attachment id -> bytes served by the fake CDN
        # Called with every new message (user's or bot's), e.g. by benchmarks that cannot
        # afford a wait_for predicate per channel.
        self.message_listeners: list[Callable[[Message], None]] = []
        self._undo_patch: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        """Serve on 127.0.0.1 on a free port."""
        app = web.Application()
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{channel}/{id}/{name}", self._cdn)
        RestApi(self).register(app)
        app.router.add_route("*", "/{tail:.*}", self._unknown_route)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        """Close gateway sessions, stop the server and undo `patch_discord`."""
        for session in self.sessions:
            if not session.closed:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._undo_patch is not None:
            self._undo_patch()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """REST base, for discord.http.Route.BASE."""
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        """Gateway URL; discord.py appends its own query string."""
        return f"ws://127.0.0.1:{self.port}/"

    def patch_discord(self) -> Callable[[], None]:
        """Point discord.py at this emulator; returns the undo (also run by `close`)."""
        saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.base_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

        def undo() -> None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved
            self._undo_patch = None

        self._undo_patch = undo
        return undo

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        return await handle_gateway(self, request)

    async def _unknown_route(self, request: web.Request) -> web.Response:
        self.unknown_routes.append(f"{request.method} {request.path}")
        self._changed()
        return json_response(404, {"message": "404: Not Found", "code": 0}, {})

    # -- world building (before the bot connects: later changes are not dispatched) ------------

    def add_user(self, name: str, *, bot: bool = False, accepts_dms: bool = True) -> User:
        """Create a user account."""
        user = User(snowflake(), name, bot=bot, accepts_dms=accepts_dms)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, *, owner: User | None = None) -> Guild:
        """Create a guild with an @everyone role holding Discord's default text permissions."""
        guild = Guild(snowflake(), name, (owner or self.owner).id)
        guild.roles[guild.id] = Role(guild.id, guild.id, "@everyone", DEFAULT_PERMISSIONS)
        self.guilds[guild.id] = guild
        self.add_member(guild, self.bot_user)
        self.add_member(guild, owner or self.owner)
        return guild

    def add_role(
        self, guild: Guild, name: str, *, permissions: int = 0, mentionable: bool = False
    ) -> Role:
        """Create a role."""
        role = Role(snowflake(), guild.id, name, permissions, mentionable)
        guild.roles[role.id] = role
        return role

    def add_member(
        self,
        guild: Guild,
        user: User,
        *,
        roles: tuple[Role, ...] | list[Role] = (),
        permissions: int | None = None,
        nick: str | None = None,
    ) -> Member:
        """Add `user` to `guild`; `permissions` creates a personal role granting them."""
        role_ids = [r.id for r in roles]
        if permissions is not None:
            role_ids.append(self.add_role(guild, f"{user.name}-perms", permissions=permissions).id)
        member = Member(user, guild.id, role_ids, nick)
        guild.members[user.id] = member
        return member

    def add_text_channel(self, guild: Guild, name: str) -> Channel:
        """Create a text channel."""
        channel = Channel(snowflake(), name, 0, guild.id, position=len(guild.channels))
        guild.channels[channel.id] = self.channels[channel.id] = channel
        return channel

    def dm_channel(self, user: User) -> Channel:
        """The DM channel between the bot and `user` (created once)."""
        if user.id not in self._dms:
            channel = Channel(snowflake(), "", 1, recipient=user)
            self._dms[user.id] = self.channels[channel.id] = channel
        return self._dms[user.id]

    def permissions(self, guild: Guild, user: User) -> int:
        """Guild-level permissions of `user` (owner and administrators get everything)."""
        if user.id == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(user.id)
        perms = guild.roles[guild.id].permissions
        for role_id in member.roles if member else []:
            perms |= guild.roles[role_id].permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    # -- observing ------------------------------------------------------------------------------

    @property
    def rate_limited(self) -> list[RateLimitHit]:
        """Every 429 answered so far."""
        return self.ratelimiter.hits

    def channel_messages(self, channel: Channel) -> list[Message]:
        """All messages stored in `channel`, oldest first (deleted ones included)."""
        return list(self._log[channel.id])

    def bot_messages(self, channel: Channel) -> list[Message]:
        """The bot's undeleted messages in `channel`, oldest first."""
        return [m for m in self._log[channel.id] if m.author is self.bot_user and not m.deleted]

    def edits(self, channel: Channel) -> list[tuple[Message, Revision]]:
        """Every edit of the bot's messages in `channel`, in time order (for pacing checks)."""
        found = [(m, r) for m in self.bot_messages(channel) for r in m.edits]
        return sorted(found, key=lambda pair: pair[1].at)

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Return the first truthy `predicate()`, re-checked on every emulator state change."""
        try:
            async with asyncio.timeout(timeout):
                while not (result := predicate()):
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
                    await waiter
                return result
        except TimeoutError:
            raise TimeoutError(f"not met within {timeout}s; {self._summary()}") from None

    async def wait_for_bot_message(
        self,
        channel: Channel,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 5.0,
        after: Message | None = None,
    ) -> Message:
        """Wait for a bot message newer than `after` (default: the last user message there)."""
        after = after or self._last_user_message.get(channel.id)
        after_id = after.id if after else 0

        def find() -> Message | None:
            return next(
                (
                    m
                    for m in self.bot_messages(channel)
                    if m.id > after_id and (predicate is None or predicate(m))
                ),
                None,
            )

        return await self.wait_for(find, timeout)

    async def wait_until_ready(self, timeout: float = 5.0, *, sessions: int = 1) -> GatewaySession:
        """Wait until READY and all GUILD_CREATEs went out on the `sessions`-th connection."""

        def check() -> GatewaySession | None:
            live = self._live_session()
            return live if sum(s.ready for s in self.sessions) >= sessions else None

        return await self.wait_for(check, timeout)

    def _live_session(self) -> GatewaySession | None:
        live = [s for s in self.sessions if s.ready and not s.closed]
        return live[-1] if live else None

    def _summary(self) -> str:
        bot = [
            f"#{m.channel.name}:{m.content[:40]!r}"
            for m in self.messages.values()
            if m.author is self.bot_user
        ]
        return (
            f"last requests={self.requests[-5:]}, unknown routes={self.unknown_routes}, "
            f"429s={len(self.rate_limited)}, bot messages={bot[-5:]}, "
            f"sessions={[(s.ready, s.closed) for s in self.sessions]}"
        )

    # -- driving ---------------------------------------------------------------------------------

    async def user_message(
        self,
        channel: Channel,
        author: User,
        content: str,
        *,
        mention_bot: bool = False,
        reply_to: Message | None = None,
        ping_reply: bool = True,
        attachments: list[str | Json] | None = None,
    ) -> Message:
        """Post as `author` and dispatch MESSAGE_CREATE (content hidden as without the intent).

        Replies ping the replied-to author, as Discord's client does unless `ping_reply` is off.
        """
        session = self._require_session()
        if (
            mention_bot
            and f"<@{self.bot_user.id}>" not in content
            and f"<@!{self.bot_user.id}>" not in content
        ):
            content = f"{self.bot_user.mention} {content}"
        guild = self.guilds.get(channel.guild_id or 0)
        if guild is not None and author.id not in guild.members:
            self.add_member(guild, author)
        files = [{"filename": a} if isinstance(a, str) else a for a in attachments or []]
        no_reply_ping = None if ping_reply else {"parse": ["users", "roles"], "replied_user": False}
        msg = self._new_message(
            channel,
            author,
            content=content,
            files=files,
            referenced=reply_to,
            allowed_mentions=no_reply_ping,
        )
        self._last_user_message[channel.id] = msg
        payload = msg.payload(guild=guild)
        # Without MESSAGE_CONTENT, Discord blanks content except in DMs, mentions of the bot
        # and the bot's own messages.
        bot_mentioned = self.bot_user in msg.mentions
        if not (session.intents & MESSAGE_CONTENT or channel.recipient or bot_mentioned):
            payload.update(content="", embeds=[], attachments=[], components=[])
        await session.send(0, payload, "MESSAGE_CREATE")
        self._changed()
        return msg

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, as Discord does before maintenance; the client then tries RESUME."""
        await self._require_session().send(7, None)

    async def invoke_slash(
        self,
        channel: Channel,
        user: User,
        name: str,
        *,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        permissions: int | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Dispatch a slash command (type 2); `subcommand` may be "group sub"."""
        return await self._interact(
            2, channel, user, name, subcommand, options or {}, None, permissions, locale
        )

    async def autocomplete(
        self,
        channel: Channel,
        user: User,
        name: str,
        *,
        option: str,
        value: str,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> list[Json]:
        """Dispatch an autocomplete (type 4) for `option` and return the bot's choices."""
        opts = {**(options or {}), option: value}
        ix = await self._interact(4, channel, user, name, subcommand, opts, option, None, "en-US")
        response = await ix.wait_response(timeout)
        if response.type != 8:
            raise AssertionError(f"autocomplete answered with callback type {response.type}")
        choices: list[Json] = response.data.get("choices", [])
        return choices

    async def _interact(
        self,
        kind: int,
        channel: Channel,
        user: User,
        name: str,
        subcommand: str | None,
        options: Mapping[str, Any],
        focused: str | None,
        permissions: int | None,
        locale: str,
    ) -> Interaction:
        session = self._require_session()
        guild = self.guilds.get(channel.guild_id or 0)
        command = self._find_command(name, guild)
        path = subcommand.split() if subcommand else []
        opts, resolved = self._options(command, path, options, focused, guild)
        ix = Interaction(
            snowflake(),
            f"emu-{secrets.token_urlsafe(32)}",
            kind,
            channel,
            user,
            " ".join([name, *path]),
            time.monotonic(),
            self.wait_for,
        )
        data: Json = {
            "id": command["id"],
            "name": name,
            "type": 1,
            "options": opts,
            "resolved": resolved,
        }
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        bot_perms = self.permissions(guild, self.bot_user) if guild else DEFAULT_PERMISSIONS
        if channel.id in self.forbidden_channels:
            bot_perms &= ~SEND_MESSAGES
        payload: Json = {
            "id": str(ix.id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": ix.token,
            "version": 1,
            "attachment_size_limit": 10 * 1024 * 1024,
            "data": data,
            "channel": channel.payload(),
            "channel_id": str(channel.id),
            "app_permissions": str(bot_perms),
            "locale": locale,
            "entitlements": [],
            # Guild install: the guild id, or "0" when used in the bot's DM.
            "authorizing_integration_owners": {"0": str(guild.id) if guild else "0"},
            "context": 0 if guild else 1,
        }
        if guild is not None:
            member = guild.members.get(user.id) or self.add_member(guild, user)
            perms = self.permissions(guild, user) if permissions is None else permissions
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member.payload(permissions=perms),
            )
        else:
            payload["user"] = user.payload()
        self.interactions[ix.id] = self.tokens[ix.token] = ix
        ix.dispatched_at = time.monotonic()
        await session.send(0, payload, "INTERACTION_CREATE")
        self._changed()
        return ix

    def _find_command(self, name: str, guild: Guild | None) -> Json:
        scopes = ([guild.id] if guild else []) + [None]
        for scope in scopes:
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        known = [c["name"] for scope in scopes for c in self.commands.get(scope, [])]
        raise LookupError(f"/{name} is not registered (registered: {known}); did the bot sync?")

    def _options(
        self,
        command: Json,
        path: list[str],
        values: Mapping[str, Any],
        focused: str | None,
        guild: Guild | None,
    ) -> tuple[list[Json], Json]:
        """Build nested interaction options, typed from the registered definition."""
        specs: list[Json] = command.get("options") or []
        groups: list[Json] = []
        for part in path:
            spec = next((o for o in specs if o["name"] == part and o["type"] in (1, 2)), None)
            if spec is None:
                raise LookupError(f"no subcommand {part!r} in /{command['name']}")
            groups.append({"type": spec["type"], "name": part, "options": []})
            specs = spec.get("options") or []
        resolved: Json = {}
        leaf: list[Json] = []
        for name, value in values.items():
            spec = next((o for o in specs if o["name"] == name), None)
            if spec is None:
                raise LookupError(f"no option {name!r}; known: {[o['name'] for o in specs]}")
            option: Json = {"type": spec["type"], "name": name, "value": value}
            if isinstance(value, User):
                option["value"] = str(value.id)
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                if guild is not None and value.id in guild.members:
                    member = guild.members[value.id].payload(with_user=False)
                    resolved.setdefault("members", {})[str(value.id)] = member
            elif isinstance(value, Role):
                option["value"] = str(value.id)
                resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            if name == focused:
                option.update(focused=True, value=str(value))  # partial input is always a string
            leaf.append(option)
        for group in reversed(groups):
            group["options"], leaf = leaf, [group]
        return leaf, resolved

    def _require_session(self) -> GatewaySession:
        session = self._live_session()
        if session is None:
            raise RuntimeError(
                "no ready gateway session: start the bot and await wait_until_ready()"
            )
        return session

    # -- shared by REST and driving ---------------------------------------------------------------

    def _changed(self) -> None:
        """Wake every `wait_for` so it re-checks its predicate."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _attachment(self, channel: Channel, file: Json) -> Json:
        """Attachment object for uploaded file metadata; `data` (bytes or str) is served."""
        att_id = snowflake()
        file = dict(file)
        data = file.pop("data", None)
        if isinstance(data, str):
            data = data.encode()
        if data is not None:
            self.files[att_id] = data
            file.setdefault("size", len(data))
        name = file.get("filename", "file.bin")
        url = f"http://127.0.0.1:{self.port}/attachments/{channel.id}/{att_id}/{name}"
        return {
            "id": str(att_id),
            "filename": name,
            "size": 0,
            "content_type": "application/octet-stream",
            **file,
            "url": url,
            "proxy_url": url,
        }

    async def _cdn(self, request: web.Request) -> web.Response:
        """Attachment downloads, like Discord's CDN (no authentication; 404 when unknown)."""
        data = self.files.get(int(request.match_info["id"]))
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="application/octet-stream")

    def _new_message(
        self,
        channel: Channel,
        author: User,
        *,
        content: str,
        embeds: list[Json] | None = None,
        files: list[Json] | None = None,
        allowed_mentions: Json | None = None,
        message_reference: Json | None = None,
        referenced: Message | None = None,
        flags: int = 0,
        type_: int = 0,
        interaction: Interaction | None = None,
    ) -> Message:
        """Store a message and work out who it pings."""
        guild = self.guilds.get(channel.guild_id or 0)
        can_everyone = guild is not None and bool(
            self.permissions(guild, author) & MENTION_EVERYONE
        )
        pinged = compute_pings(
            content,
            allowed_mentions,
            author_id=author.id,
            replied_author_id=referenced.author.id if referenced else None,
            can_mention_everyone=can_everyone,
            mentionable_roles={r.id for r in guild.roles.values() if r.mentionable}
            if guild
            else set(),
        )
        if guild is None:  # roles and @everyone mean nothing in DMs
            pinged = {p for p in pinged if p.startswith("user:")}
        msg = Message(
            snowflake(),
            channel,
            author,
            [Revision(time.monotonic(), content, embeds or [])],
            attachments=[self._attachment(channel, f) for f in files or []],
            allowed_mentions=allowed_mentions,
            message_reference=message_reference,
            referenced=referenced,
            pinged=pinged,
            mentions=[
                self.users[int(p[5:])]
                for p in sorted(pinged)
                if p.startswith("user:") and int(p[5:]) in self.users
            ],
            flags=flags,
            type=19 if referenced and type_ == 0 else type_,
            interaction=interaction,
        )
        self.messages[msg.id] = msg
        self._log[channel.id].append(msg)
        for listener in self.message_listeners:
            listener(msg)
        return msg

    def _revise(self, msg: Message, content: str, embeds: list[Json]) -> None:
        """Record an edit."""
        msg.history.append(Revision(time.monotonic(), content, embeds))

    async def _publish(self, msg: Message, event: str = "MESSAGE_CREATE") -> None:
        """Tell the client about its own message, as Discord echoes it on the gateway."""
        session = self._live_session()
        if session is not None and not msg.ephemeral:
            await session.send(
                0, msg.payload(guild=self.guilds.get(msg.channel.guild_id or 0)), event
            )
        self._changed()

    async def delete_message(self, msg: Message) -> None:
        """Delete a message as its author or a moderator would (MESSAGE_DELETE follows)."""
        await self._delete(msg)

    async def _delete(self, msg: Message) -> None:
        """Mark deleted and dispatch MESSAGE_DELETE."""
        msg.deleted = True
        session = self._live_session()
        if session is not None and not msg.ephemeral:
            data = {"id": str(msg.id), "channel_id": str(msg.channel.id)}
            if msg.channel.guild_id is not None:
                data["guild_id"] = str(msg.channel.guild_id)
            await session.send(0, data, "MESSAGE_DELETE")
        self._changed()
