"""REST handlers under /api/v10, with Discord's validation, errors and rate limit headers."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .mentions import allowed_mentions_error
from .models import EPHEMERAL, LOADING, Callback, Channel, Interaction, Json, Message, snowflake

if TYPE_CHECKING:
    from .emulator import DiscordEmulator

API = "/api/v10"
# Route parameters discord.py folds into a bucket key (Route.major_parameters).
MAJOR_PARAMETERS = ("channel_id", "guild_id", "webhook_id", "webhook_token")
WEBHOOK_TOKEN_LIFETIME = 15 * 60
Reply = tuple[int, Any]
Handler = Callable[[web.Request], Awaitable[Reply]]


class ApiError(Exception):
    """An error answer: HTTP status plus Discord's JSON error code and message."""

    def __init__(self, status: int, code: int, message: str, errors: Json | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> Json:
        """Discord's error body."""
        body: Json = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def invalid_form(path: list[str], code: str, message: str) -> ApiError:
    """A 400 50035 "Invalid Form Body" with the error nested under `path`, as Discord does."""
    errors: Json = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        errors = {key: errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


def json_response(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    """Answer with exactly `Content-Type: application/json` (discord.py rejects a charset)."""
    if body is None:
        return web.Response(status=status, headers=headers)
    raw = json.dumps(body).encode()
    return web.Response(
        status=status, body=raw, headers={**headers, "Content-Type": "application/json"}
    )


async def read_body(request: web.Request) -> tuple[Any, list[Json]]:
    """Return the JSON body (or multipart payload_json) and uploaded files' metadata."""
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        raw = form.get("payload_json")
        files = [
            {"filename": f.filename, "size": len(f.file.read()), "content_type": f.content_type}
            for f in form.values()
            if isinstance(f, web.FileField)
        ]
        return (json.loads(raw) if isinstance(raw, str) else {}), files
    if not request.body_exists:
        return {}, []
    try:
        return await request.json(), []
    except ValueError:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from None


def _embed_texts(embeds: list[Json]) -> Iterator[tuple[list[str], str, int]]:
    """Yield (error path, text, limit) for every length-limited embed string."""
    for i, embed in enumerate(embeds):
        base = ["embeds", str(i)]
        yield [*base, "title"], embed.get("title") or "", 256
        yield [*base, "description"], embed.get("description") or "", 4096
        yield [*base, "footer", "text"], (embed.get("footer") or {}).get("text") or "", 2048
        yield [*base, "author", "name"], (embed.get("author") or {}).get("name") or "", 256
        for j, fld in enumerate(embed.get("fields") or []):
            yield [*base, "fields", str(j), "name"], fld.get("name") or "", 256
            yield [*base, "fields", str(j), "value"], fld.get("value") or "", 1024


def validate_message(body: Json, files: list[Json], *, prefix: list[str], edit: bool) -> None:
    """Raise what Discord answers for an over-long, malformed or (on create) empty message."""
    content = body.get("content") or ""
    if len(content) > 2000:
        raise invalid_form(
            [*prefix, "content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."
        )
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        raise invalid_form(
            [*prefix, "embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
        )
    total = 0
    for path, text, cap in _embed_texts(embeds):
        total += len(text)
        if len(text) > cap:
            raise invalid_form(
                [*prefix, *path], "BASE_TYPE_MAX_LENGTH", f"Must be {cap} or fewer in length."
            )
    if total > 6000:
        raise invalid_form(
            [*prefix, "embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            "Embed size exceeds maximum size of 6000",
        )
    if body.get("allowed_mentions") is not None:
        problem = allowed_mentions_error(body["allowed_mentions"])
        if problem:
            raise invalid_form(
                [*prefix, "allowed_mentions"], "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE", problem
            )
    if not edit and is_empty(content, embeds, files, body):
        raise ApiError(400, 50006, "Cannot send an empty message")


def is_empty(content: str, embeds: list[Json], files: list[Json], body: Json) -> bool:
    """Whether Discord would consider the message empty (whitespace counts as nothing)."""
    extras = ("sticker_ids", "components", "poll")
    return not content.strip() and not embeds and not files and not any(body.get(k) for k in extras)


class RestApi:
    """The REST routes; every answer goes through `_serve` for auth and rate limits."""

    def __init__(self, emu: DiscordEmulator) -> None:
        self.emu = emu

    def register(self, app: web.Application) -> None:
        """Add every route to `app` (the catch-all for unknown routes is added by the caller)."""
        msg, hook = (
            "/channels/{channel_id}/messages/{message_id}",
            "/webhooks/{webhook_id}/{webhook_token}",
        )
        cmds, guild_cmds = (
            "/applications/{application_id}/commands",
            "/applications/{application_id}/guilds/{guild_id}/commands",
        )
        d, w = "default", "webhook"
        routes: list[tuple[str, Handler, str]] = [
            ("GET /users/@me", self.get_me, d),
            ("GET /oauth2/applications/@me", self.get_application, d),
            (f"GET {cmds}", self.get_commands, d),
            (f"PUT {cmds}", self.put_commands, d),
            (f"GET {guild_cmds}", self.get_commands, d),
            (f"PUT {guild_cmds}", self.put_commands, d),
            ("GET /channels/{channel_id}", self.get_channel, d),
            ("POST /channels/{channel_id}/typing", self.typing, d),
            ("POST /channels/{channel_id}/messages", self.create_message, "message_create"),
            (f"GET {msg}", self.get_message, d),
            (f"PATCH {msg}", self.edit_message, "message_edit"),
            (f"DELETE {msg}", self.delete_message, d),
            ("POST /users/@me/channels", self.create_dm, d),
            ("POST /interactions/{webhook_id}/{webhook_token}/callback", self.callback, d),
            (f"POST {hook}", self.followup, w),
            (f"GET {hook}/messages/{{message_id}}", self.get_webhook_message, d),
            (f"PATCH {hook}/messages/{{message_id}}", self.edit_webhook_message, w),
            (f"DELETE {hook}/messages/{{message_id}}", self.delete_webhook_message, w),
        ]
        for route, handler, bucket in routes:
            method, path = route.split(" ")
            # Interaction routes authenticate by the token in the URL, not the header.
            auth = not path.startswith(("/interactions/", "/webhooks/"))
            app.router.add_route(method, API + path, self._wrap(handler, bucket, auth, route))

    def _wrap(
        self, handler: Handler, bucket: str, auth: bool, route: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, handler, bucket, auth, route)

        return serve

    async def _serve(
        self, request: web.Request, handler: Handler, bucket: str, auth: bool, route: str
    ) -> web.Response:
        emu = self.emu
        emu.requests.append(f"{request.method} {request.path}")
        try:
            status, body, headers = await self._answer(request, handler, bucket, auth, route)
        finally:
            emu._changed()  # tests may wait on emu.requests, even for rejected calls
        return json_response(status, body, headers)

    async def _answer(
        self, request: web.Request, handler: Handler, bucket: str, auth: bool, route: str
    ) -> tuple[int, Any, dict[str, str]]:
        emu = self.emu
        if auth and request.headers.get("Authorization") != f"Bot {emu.bot_user.token}":
            return 401, {"message": "401: Unauthorized", "code": 0}, {}
        major = "+".join(request.match_info[k] for k in MAJOR_PARAMETERS if k in request.match_info)
        headers, retry_after = emu.ratelimiter.take(bucket, major, route)
        # discord.py treats a 429 without Via as a Cloudflare ban; Discord always sends it.
        headers["Via"] = "1.1 google"
        if retry_after is not None:
            limited = {"message": "You are being rate limited.", "retry_after": retry_after}
            return 429, {**limited, "global": False}, headers
        try:
            status, body = await handler(request)
        except ApiError as exc:
            status, body = exc.status, exc.body()
        return status, body, headers

    # -- lookups -------------------------------------------------------------------------

    def _channel(self, request: web.Request, *, send: bool = False) -> Channel:
        channel = self.emu.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        if send and channel.id in self.emu.forbidden_channels:
            raise ApiError(403, 50013, "Missing Permissions")
        if send and channel.recipient is not None and not channel.recipient.accepts_dms:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        return channel

    def _message(self, channel: Channel, request: web.Request) -> Message:
        found = self.emu.messages.get(int(request.match_info["message_id"]))
        if found is None or found.deleted or found.channel is not channel:
            raise ApiError(404, 10008, "Unknown Message")
        return found

    def _guild_id(self, request: web.Request) -> int | None:
        if int(request.match_info["application_id"]) != self.emu.application_id:
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" not in request.match_info:
            return None
        guild_id = int(request.match_info["guild_id"])
        if guild_id not in self.emu.guilds:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild_id

    def _interaction(self, request: web.Request) -> Interaction:
        ix = self.emu.tokens.get(request.match_info["webhook_token"])
        # Followups before the initial callback fail the same way as an unknown webhook.
        if (
            ix is None
            or int(request.match_info["webhook_id"]) != self.emu.application_id
            or not ix.callbacks
        ):
            raise ApiError(404, 10015, "Unknown Webhook")
        if time.monotonic() - ix.dispatched_at > WEBHOOK_TOKEN_LIFETIME:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return ix

    def _webhook_message(self, ix: Interaction, request: web.Request) -> Message:
        wanted = request.match_info["message_id"]
        candidates = [ix.original] if wanted == "@original" else [ix.original, *ix.followups]
        for msg in candidates:
            if msg is not None and not msg.deleted and wanted in ("@original", str(msg.id)):
                return msg
        raise ApiError(404, 10008, "Unknown Message")

    def _reference(self, channel: Channel, body: Json) -> Message | None:
        ref = body.get("message_reference")
        if not ref:
            return None
        target = self.emu.messages.get(int(ref.get("message_id") or 0))
        if target is not None and not target.deleted and target.channel is channel:
            return target
        if ref.get("fail_if_not_exists", True):
            raise invalid_form(
                ["message_reference"], "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
            )
        return None  # Discord then sends it as a plain message

    def _post(self, channel: Channel, body: Json, files: list[Json], **extra: Any) -> Message:
        """Store a bot message built from a create body."""
        content, embeds = body.get("content") or "", body.get("embeds") or []
        mentions = body.get("allowed_mentions")
        return self.emu._new_message(
            channel,
            self.emu.bot_user,
            content=content,
            embeds=embeds,
            files=files,
            allowed_mentions=mentions,
            **extra,
        )

    # -- application -----------------------------------------------------------------------

    async def get_me(self, request: web.Request) -> Reply:
        """GET /users/@me."""
        return 200, {
            **self.emu.bot_user.payload(),
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
        }

    async def get_application(self, request: web.Request) -> Reply:
        """GET /oauth2/applications/@me; discord.py reads these keys unguarded."""
        emu = self.emu
        return 200, {
            "id": str(emu.application_id),
            "name": emu.bot_user.name,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": emu.owner.payload(),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "bot": emu.bot_user.payload(),
        }

    async def get_commands(self, request: web.Request) -> Reply:
        """GET the global or guild command list."""
        return 200, self.emu.commands.get(self._guild_id(request), [])

    async def put_commands(self, request: web.Request) -> Reply:
        """PUT (bulk overwrite); like Discord, a command keeps its id if name and type match."""
        guild_id = self._guild_id(request)
        body, _ = await read_body(request)
        old = {(c["name"], c.get("type", 1)): c for c in self.emu.commands.get(guild_id, [])}
        stored = []
        for cmd in body:
            prev = old.get((cmd["name"], cmd.get("type", 1)))
            entry = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **cmd,
                "id": prev["id"] if prev else str(snowflake()),
                "application_id": str(self.emu.application_id),
                "version": str(snowflake()),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        self.emu.commands[guild_id] = stored
        self.emu._changed()
        return 200, stored

    # -- channels and messages ---------------------------------------------------------------

    async def get_channel(self, request: web.Request) -> Reply:
        """GET /channels/{id}."""
        return 200, self._channel(request).payload()

    async def typing(self, request: web.Request) -> Reply:
        """POST /channels/{id}/typing: counted per channel."""
        channel = self._channel(request, send=True)
        self.emu.typing[channel.id] += 1
        self.emu._changed()
        return 204, None

    async def create_dm(self, request: web.Request) -> Reply:
        """POST /users/@me/channels."""
        body, _ = await read_body(request)
        user = self.emu.users.get(int(body.get("recipient_id") or 0))
        if user is None:
            raise ApiError(400, 50033, "Invalid Recipient(s)")
        return 200, self.emu.dm_channel(user).payload()

    async def create_message(self, request: web.Request) -> Reply:
        """POST /channels/{id}/messages."""
        channel = self._channel(request, send=True)
        body, files = await read_body(request)
        validate_message(body, files, prefix=[], edit=False)
        ref = self._reference(channel, body)
        msg = self._post(
            channel, body, files, message_reference=body.get("message_reference"), referenced=ref
        )
        await self.emu._publish(msg)
        return 200, msg.payload()

    async def get_message(self, request: web.Request) -> Reply:
        """GET a channel message."""
        return 200, self._message(self._channel(request), request).payload()

    async def edit_message(self, request: web.Request) -> Reply:
        """PATCH a channel message; only the bot's own."""
        msg = self._message(self._channel(request), request)
        if msg.author is not self.emu.bot_user:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        return await self._edit(msg, request)

    async def delete_message(self, request: web.Request) -> Reply:
        """DELETE a channel message."""
        msg = self._message(self._channel(request), request)
        await self.emu._delete(msg)
        return 204, None

    async def _edit(self, msg: Message, request: web.Request) -> Reply:
        body, files = await read_body(request)
        validate_message(body, files, prefix=[], edit=True)
        content = body.get("content", msg.content) or ""
        embeds = body.get("embeds", msg.embeds) or []
        attachments = msg.attachments
        if "attachments" in body:  # the list of existing attachments to keep
            keep = {str(a.get("id")) for a in body["attachments"] or []}
            attachments = [a for a in attachments if a["id"] in keep]
        attachments = attachments + [self.emu._attachment(msg.channel, f) for f in files]
        if is_empty(content, embeds, attachments, body):
            raise ApiError(400, 50006, "Cannot send an empty message")
        # Edits never ping, so a new allowed_mentions is not recorded or re-evaluated.
        msg.attachments = attachments
        msg.flags &= ~LOADING  # editing a deferred "thinking" response completes it
        self.emu._revise(msg, content, embeds)
        await self.emu._publish(msg, "MESSAGE_UPDATE")
        return 200, msg.payload()

    # -- interactions --------------------------------------------------------------------------

    async def callback(self, request: web.Request) -> Reply:
        """POST /interactions/{id}/{token}/callback: the one allowed initial response."""
        emu = self.emu
        ix = emu.interactions.get(int(request.match_info["webhook_id"]))
        if ix is None or ix.token != request.match_info["webhook_token"]:
            raise ApiError(404, 10062, "Unknown interaction")
        elapsed = time.monotonic() - ix.dispatched_at
        if elapsed > emu.interaction_timeout:
            raise ApiError(404, 10062, "Unknown interaction")  # the token died after 3 s
        if ix.callbacks:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body, files = await read_body(request)
        kind, data = int(body.get("type", 0)), body.get("data") or {}
        msg = None
        if kind == 4:
            validate_message(data, files, prefix=["data"], edit=False)
        if kind == 8 and len(data.get("choices") or []) > 25:
            raise invalid_form(
                ["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
        if kind in (4, 5):
            flags = (int(data.get("flags", 0)) & EPHEMERAL) | (LOADING if kind == 5 else 0)
            msg = self._post(
                ix.channel, data if kind == 4 else {}, files, flags=flags, type_=20, interaction=ix
            )
            ix.original = msg
        ix.callbacks.append(Callback(kind, data, elapsed))
        if msg is not None:
            await emu._publish(msg)
        emu._changed()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        interaction = {
            "id": str(ix.id),
            "type": ix.type,
            "response_message_id": str(msg.id) if msg else None,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(msg and msg.ephemeral),
        }
        resource: Json = {"type": kind}
        if msg is not None:
            resource["message"] = msg.payload()
        return 200, {"interaction": interaction, "resource": resource}

    async def followup(self, request: web.Request) -> Reply:
        """POST /webhooks/{app}/{token}: a followup message."""
        ix = self._interaction(request)
        body, files = await read_body(request)
        validate_message(body, files, prefix=[], edit=False)
        flags = int(body.get("flags", 0)) & EPHEMERAL
        msg = self._post(ix.channel, body, files, flags=flags, interaction=ix)
        ix.followups.append(msg)
        await self.emu._publish(msg)
        if request.query.get("wait") in ("1", "true", "True"):
            return 200, msg.payload()
        return 204, None

    async def get_webhook_message(self, request: web.Request) -> Reply:
        """GET the original response or a followup."""
        return 200, self._webhook_message(self._interaction(request), request).payload()

    async def edit_webhook_message(self, request: web.Request) -> Reply:
        """PATCH the original response or a followup."""
        return await self._edit(self._webhook_message(self._interaction(request), request), request)

    async def delete_webhook_message(self, request: web.Request) -> Reply:
        """DELETE the original response or a followup."""
        msg = self._webhook_message(self._interaction(request), request)
        await self.emu._delete(msg)
        return 204, None
