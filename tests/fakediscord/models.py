"""Records of the emulated Discord world and the JSON payloads Discord would send for them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000
# @everyone in a fresh guild: view, send, embed, attach, read history, mention everyone,
# reactions, application commands (Discord's defaults for text).
DEFAULT_PERMISSIONS = (
    (1 << 6) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 17) | (1 << 31)
)
ADMINISTRATOR = 1 << 3
MENTION_EVERYONE = 1 << 17
SEND_MESSAGES = 1 << 11
ALL_PERMISSIONS = (1 << 53) - 1
EPHEMERAL, LOADING = 1 << 6, 1 << 7

_last_snowflake = 0


def snowflake() -> int:
    """Return a new snowflake: timestamped now and strictly greater than any issued before."""
    global _last_snowflake
    # Monotonic ids let tests compare "newer than" by id, as with real Discord messages.
    _last_snowflake = max(_last_snowflake + 1, (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22)
    return _last_snowflake


def iso(monotonic: float | None = None) -> str:
    """Format a time.monotonic() instant (default now) as Discord's ISO 8601 timestamp."""
    ago = 0.0 if monotonic is None else time.monotonic() - monotonic
    return datetime.fromtimestamp(time.time() - ago, UTC).isoformat()


@dataclass(eq=False)
class User:
    """A Discord account; `token` is set only for the bot user."""

    id: int
    name: str
    bot: bool = False
    accepts_dms: bool = True  # False: the bot gets 403 50007 when it DMs this user
    token: str | None = field(default=None, repr=False)

    @property
    def mention(self) -> str:
        """The `<@id>` form a client would type."""
        return f"<@{self.id}>"

    def payload(self) -> Json:
        """User object; discord.py reads id, username, discriminator and avatar unguarded."""
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass(eq=False)
class Role:
    """A guild role; the @everyone role shares the guild's id."""

    id: int
    guild_id: int
    name: str
    permissions: int = 0
    mentionable: bool = False

    @property
    def mention(self) -> str:
        """The `<@&id>` form, or `@everyone` for the default role."""
        return "@everyone" if self.id == self.guild_id else f"<@&{self.id}>"

    def payload(self) -> Json:
        """Role object."""
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": self.mentionable,
            "flags": 0,
        }


@dataclass(eq=False)
class Member:
    """A user's membership in a guild."""

    user: User
    guild_id: int
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso)

    def payload(self, *, with_user: bool = True, permissions: int | None = None) -> Json:
        """Member object; discord.py requires `roles` and `flags`."""
        data: Json = {
            "roles": [str(r) for r in self.roles],
            "nick": self.nick,
            "joined_at": self.joined_at,
            "flags": 0,
            "deaf": False,
            "mute": False,
        }
        if with_user:
            data["user"] = self.user.payload()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass(eq=False)
class Channel:
    """A guild text channel (type 0) or a DM (type 1, with `recipient`)."""

    id: int
    name: str
    type: int = 0
    guild_id: int | None = None
    recipient: User | None = None
    position: int = 0

    def payload(self) -> Json:
        """Channel object."""
        if self.recipient is not None:
            return {
                "id": str(self.id),
                "type": 1,
                "recipients": [self.recipient.payload()],
                "last_message_id": None,
                "flags": 0,
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass(eq=False)
class Guild:
    """A guild with its roles, channels and members."""

    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    def payload(self, *, member_ids: set[int] | None = None) -> Json:
        """GUILD_CREATE body; `member_ids` limits the member list (no GUILD_MEMBERS intent)."""
        members = [
            m for m in self.members.values() if member_ids is None or m.user.id in member_ids
        ]
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_id": str(self.owner_id),
            "unavailable": False,
            "large": False,
            "member_count": len(self.members),
            "joined_at": iso(),
            "roles": [r.payload() for r in self.roles.values()],
            "channels": [c.payload() for c in self.channels.values()],
            "members": [m.payload() for m in members],
            "emojis": [],
            "stickers": [],
            "features": [],
            "threads": [],
            "preferred_locale": "en-US",
        }


@dataclass
class Revision:
    """One version of a message; `at` is time.monotonic() when it was stored."""

    at: float
    content: str
    embeds: list[Json]


@dataclass(eq=False)
class Message:
    """A message as stored by the emulator, with what the bot sent and who it would ping."""

    id: int
    channel: Channel
    author: User
    history: list[Revision]
    attachments: list[Json] = field(default_factory=list)
    allowed_mentions: Json | None = None  # exactly as the client sent it; None when absent
    message_reference: Json | None = None  # as the client sent it
    referenced: Message | None = None
    pinged: set[str] = field(default_factory=set)  # "everyone", "here", "user:ID", "role:ID"
    mentions: list[User] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    interaction: Interaction | None = None
    deleted: bool = False

    @property
    def content(self) -> str:
        """Current content."""
        return self.history[-1].content

    @property
    def embeds(self) -> list[Json]:
        """Current embeds."""
        return self.history[-1].embeds

    @property
    def edits(self) -> list[Revision]:
        """Revisions after the first one."""
        return self.history[1:]

    @property
    def created_at(self) -> float:
        """time.monotonic() when the message was created."""
        return self.history[0].at

    @property
    def ephemeral(self) -> bool:
        """True for interaction messages only their invoker sees."""
        return bool(self.flags & EPHEMERAL)

    def payload(self, *, guild: Guild | None = None) -> Json:
        """Message object; with `guild`, the gateway extras (guild_id, member)."""
        last = self.history[-1]
        data: Json = {
            "id": str(self.id),
            "type": self.type,
            "channel_id": str(self.channel.id),
            "author": self.author.payload(),
            "content": last.content,
            "embeds": last.embeds,
            "attachments": self.attachments,
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(last.at) if self.edits else None,
            "tts": False,
            "mention_everyone": bool(self.pinged & {"everyone", "here"}),
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [p[5:] for p in sorted(self.pinged) if p.startswith("role:")],
            "pinned": False,
            "flags": self.flags,
            "components": [],
        }
        if self.interaction is not None:
            data["webhook_id"] = data["application_id"] = str(self.author.id)
        if self.referenced is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.referenced.id),
                "channel_id": str(self.channel.id),
            }
            if self.channel.guild_id is not None:
                data["message_reference"]["guild_id"] = str(self.channel.guild_id)
            # Discord nests one level only: the referenced message carries no reference of its own.
            # A deleted target arrives as null, which discord.py resolves to a
            # DeletedReferencedMessage.
            if self.referenced.deleted:
                data["referenced_message"] = None
            else:
                data["referenced_message"] = self.referenced.payload()
                data["referenced_message"].pop("referenced_message", None)
        if guild is not None:
            data["guild_id"] = str(guild.id)
            member = guild.members.get(self.author.id)
            if member is not None and self.interaction is None:
                data["member"] = member.payload(with_user=False)
            for mention in data["mentions"]:
                if (m := guild.members.get(int(mention["id"]))) is not None:
                    mention["member"] = m.payload(with_user=False)
        return data


@dataclass
class Callback:
    """An interaction callback the bot sent; `at` is seconds after the interaction's dispatch."""

    type: int
    data: Json
    at: float


@dataclass(eq=False)
class Interaction:
    """A dispatched interaction and everything the bot answered to it."""

    id: int
    token: str
    type: int
    channel: Channel
    user: User
    command: str
    dispatched_at: float  # time.monotonic()
    wait: Callable[[Callable[[], Any], float], Awaitable[Any]] = field(repr=False)
    callbacks: list[Callback] = field(default_factory=list)
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)

    @property
    def response(self) -> Callback | None:
        """The first (and only valid) callback, if any."""
        return self.callbacks[0] if self.callbacks else None

    async def wait_response(self, timeout: float = 5.0) -> Callback:
        """Wait for the bot's initial callback (type 4 message, 5 deferred, 8 choices...)."""
        result: Callback = await self.wait(lambda: self.response, timeout)
        return result

    async def wait_followups(self, count: int = 1, timeout: float = 5.0) -> list[Message]:
        """Wait until at least `count` followup messages were sent."""
        await self.wait(lambda: len(self.followups) >= count, timeout)
        return self.followups

    async def wait_original(
        self, predicate: Callable[[Message], bool] | None = None, timeout: float = 5.0
    ) -> Message:
        """Wait until the original response exists (and satisfies `predicate`)."""

        def check() -> Message | None:
            msg = self.original
            return msg if msg is not None and (predicate is None or predicate(msg)) else None

        result: Message = await self.wait(check, timeout)
        return result
