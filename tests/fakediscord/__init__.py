"""A loopback Discord (REST under /api/v10 and the gateway) for end-to-end tests with discord.py."""

from .emulator import DiscordEmulator
from .gateway import GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT, GatewaySession
from .models import Callback, Channel, Guild, Interaction, Member, Message, Revision, Role, User
from .ratelimit import Limit, RateLimitHit
from .rest import ApiError

__all__ = [
    "GUILD_MEMBERS",
    "GUILD_PRESENCES",
    "MESSAGE_CONTENT",
    "ApiError",
    "Callback",
    "Channel",
    "DiscordEmulator",
    "GatewaySession",
    "Guild",
    "Interaction",
    "Limit",
    "Member",
    "Message",
    "RateLimitHit",
    "Revision",
    "Role",
    "User",
]
