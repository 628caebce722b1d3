"""Who may run operator commands (train, retrain, autopost, jobs, cancel, status).

Checked by the core on every call, whatever the transport claims: Discord's
``default_permissions`` only hides commands, and server admins can change that.
"""

from __future__ import annotations

from bot.config import DiscordSettings
from bot.core.replies import Requester


def is_operator(requester: Requester, discord: DiscordSettings) -> bool:
    if requester.is_console:
        return True
    if requester.user_id in discord.operator_ids:
        return True
    return bool(requester.role_ids & set(discord.operator_role_ids))
