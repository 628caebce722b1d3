"""Messages the bot created or edited through any route, and the waits tests do on them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fakes import WAIT_SECONDS
from fakes.discord_gateway import GatewayServer
from fakes.discord_limits import message_body_problems
from fakes.discord_model import (
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
    MESSAGE_TYPE_CHAT_INPUT_COMMAND,
    MESSAGE_TYPE_DEFAULT,
    iso_now,
)
from fakes.discord_records import (
    INTERACTION_TYPE_COMMAND,
    FakeInteraction,
    MessageEvent,
)
from fakes.discord_state import DiscordHTTPError

INTENT_GUILD_MESSAGES = 1 << 9


class MessageStore(GatewayServer):
    """Keeps current messages plus a history of snapshots (create/edit/delete) in order."""

    def sent_payloads(self) -> list[dict[str, Any]]:
        """Every JSON body the bot sent that creates or edits a message, in order."""
        return copy.deepcopy(self._sent_payloads)

    def messages(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        """Current (not deleted) messages, oldest first."""
        return [
            copy.deepcopy(message)
            for message in self._messages.values()
            if channel_id is None or int(message["channel_id"]) == channel_id
        ]

    async def wait_for_message(
        self,
        channel_id: int | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = WAIT_SECONDS,
        *,
        kinds: tuple[str, ...] = ("create", "edit"),
    ) -> dict[str, Any]:
        """The first message created or edited (by any route) that matches, as it was then."""

        def probe() -> dict[str, Any] | None:
            for event in self.message_events:
                message = event.message
                if event.kind not in kinds:
                    continue
                if channel_id is not None and int(message["channel_id"]) != channel_id:
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        where = f"channel {channel_id}" if channel_id is not None else "any channel"
        return await self._signal.wait_for(probe, timeout, f"a message ({kinds}) in {where}")

    def _accept_body(self, body: dict[str, Any], *, creating: bool) -> None:
        """Refuse what Discord would refuse (recorded as an error: the bot has a bug), else
        keep the body for `sent_payloads`."""
        problems = message_body_problems(body, creating=creating)
        if problems:
            self.errors.append("message body refused: " + "; ".join(problems))
            raise DiscordHTTPError(400, 50035, "Invalid Form Body")
        self._sent_payloads.append(copy.deepcopy(body))

    def _create_message(
        self,
        channel_id: str,
        body: dict[str, Any],
        *,
        flags: int,
        via: str,
        interaction: FakeInteraction | None = None,
    ) -> dict[str, Any]:
        message_type = MESSAGE_TYPE_DEFAULT
        message: dict[str, Any] = {
            "id": str(self.snowflake()),
            "channel_id": str(channel_id),
            "author": self.bot_user,
            "content": body.get("content") or "",
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": body.get("attachments") or [],
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "reactions": [],
            "pinned": False,
            "flags": flags,
            "nonce": body.get("nonce"),
        }
        if body.get("message_reference"):
            message["message_reference"] = body["message_reference"]
            message_type = 19
        if interaction is not None:
            member = interaction.payload["member"]
            message["webhook_id"] = str(self.application_id)
            message["application_id"] = str(self.application_id)
            message["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": member["user"],
                "authorizing_integration_owners": {"0": interaction.payload["guild_id"]},
            }
            if interaction.type == INTERACTION_TYPE_COMMAND:
                message_type = MESSAGE_TYPE_CHAT_INPUT_COMMAND
                message["interaction_metadata"]["name"] = interaction.payload["data"]["name"]
        message["type"] = message_type
        self._messages[int(message["id"])] = message
        self._message_event("create", message, via)
        return message

    def _edit(
        self,
        message_id: int | None,
        body: dict[str, Any],
        *,
        via: str,
        finish_loading: bool = False,
    ) -> dict[str, Any]:
        message = self._messages.get(message_id or 0)
        if message is None:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        for key in ("content", "embeds", "components", "attachments"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        if finish_loading:
            message["flags"] &= ~MESSAGE_FLAG_LOADING
        message["edited_timestamp"] = iso_now()
        self._message_event("edit", message, via)
        return message

    def _delete(self, message_id: int, *, via: str) -> dict[str, Any]:
        message = self._messages.pop(message_id)
        self._message_event("delete", message, via)
        return copy.deepcopy(message)

    def _message_event(self, kind: str, message: dict[str, Any], via: str) -> None:
        self.message_events.append(MessageEvent.snapshot(kind, message, via))
        self._signal.notify()
        self._gateway_message_event(kind, message)

    def _gateway_message_event(self, kind: str, message: dict[str, Any]) -> None:
        """Echo the bot's own non-ephemeral messages on the gateway if it asked for them."""
        if not self._intents() & INTENT_GUILD_MESSAGES or message["flags"] & MESSAGE_FLAG_EPHEMERAL:
            return
        channel = self._channel(int(message["channel_id"]))
        if channel is None:
            return
        guild_id = str(channel.guild_id)
        if kind == "delete":
            self.dispatch(
                "MESSAGE_DELETE",
                {"id": message["id"], "channel_id": message["channel_id"], "guild_id": guild_id},
            )
            return
        event = "MESSAGE_CREATE" if kind == "create" else "MESSAGE_UPDATE"
        bot_member = self.guilds[channel.guild_id].members[self.application_id].payload()
        bot_member.pop("user")
        self.dispatch(event, {**copy.deepcopy(message), "guild_id": guild_id, "member": bot_member})
