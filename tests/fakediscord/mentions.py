"""Who a message would notify, following Discord's allowed_mentions rules."""

from __future__ import annotations

import re
from typing import Any

_MENTION = re.compile(r"<@!?(\d+)>|<@&(\d+)>|@(everyone|here)")


def parse_mentions(content: str) -> tuple[list[int], list[int], set[str]]:
    """Return user ids, role ids and {"everyone", "here"} mentioned in `content`."""
    users: list[int] = []
    roles: list[int] = []
    broadcast: set[str] = set()
    for user, role, everyone in _MENTION.findall(content):
        if user and int(user) not in users:
            users.append(int(user))
        elif role and int(role) not in roles:
            roles.append(int(role))
        elif everyone:
            broadcast.add(everyone)
    return users, roles, broadcast


def allowed_mentions_error(allowed: Any) -> str | None:
    """Return why Discord would reject this allowed_mentions object, or None."""
    if not isinstance(allowed, dict):
        return "allowed_mentions must be an object"
    parse = allowed.get("parse", [])
    for kind in ("users", "roles"):
        if kind in parse and allowed.get(kind):
            return f'parse:["{kind}"] and {kind}: [ids] are mutually exclusive'
        if len(allowed.get(kind) or []) > 100:
            return f"{kind} must hold at most 100 ids"
    return None


def compute_pings(
    content: str,
    allowed: dict[str, Any] | None,
    *,
    author_id: int,
    replied_author_id: int | None,
    can_mention_everyone: bool,
    mentionable_roles: set[int],
) -> set[str]:
    """Return the notified targets as {"everyone", "here", "user:ID", "role:ID"}.

    Without `allowed`, everything in the content pings and a reply pings its author.
    With it, only kinds listed in `parse` or ids listed in `users`/`roles` ping (ids must
    still appear in the content), and a reply pings its author only if `replied_user`.
    Edits never ping, and nobody is notified of their own message.
    """
    users, roles, broadcast = parse_mentions(content)
    if allowed is None:
        parse = {"users", "roles", "everyone"}
        allowed_users: set[int] = set()
        allowed_roles: set[int] = set()
        replied_user = True
    else:
        parse = set(allowed.get("parse", []))
        allowed_users = {int(i) for i in allowed.get("users") or []}
        allowed_roles = {int(i) for i in allowed.get("roles") or []}
        replied_user = bool(allowed.get("replied_user", False))
    pinged: set[str] = set()
    if "everyone" in parse and can_mention_everyone:
        pinged |= broadcast
    pinged |= {f"user:{u}" for u in users if "users" in parse or u in allowed_users}
    # A role pings only if it is mentionable or the author may mention everyone.
    pinged |= {
        f"role:{r}"
        for r in roles
        if ("roles" in parse or r in allowed_roles)
        and (r in mentionable_roles or can_mention_everyone)
    }
    if replied_author_id is not None and replied_user:
        pinged.add(f"user:{replied_author_id}")
    pinged.discard(f"user:{author_id}")
    return pinged
