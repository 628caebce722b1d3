"""Interaction callbacks and follow-up webhooks, with Discord's deadlines and error codes.

A callback must come within `ack_deadline` (3 s) of the dispatch, once; follow-ups and edits
work for `token_lifetime` (15 minutes) after it. The first follow-up after a deferred
("thinking") callback replaces the loading message, as on Discord.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from aiohttp import web

from fakes.discord_model import (
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
)
from fakes.discord_records import (
    ALLOWED_CALLBACKS,
    CALLBACK_AUTOCOMPLETE,
    CALLBACK_DEFERRED_MESSAGE,
    CALLBACK_DEFERRED_UPDATE,
    CALLBACK_MESSAGE,
    CALLBACK_UPDATE_MESSAGE,
    FakeInteraction,
    InteractionEvent,
)
from fakes.discord_rest import RestApi
from fakes.discord_state import DiscordHTTPError, Handler, Route, json_response


class InteractionWebhooks(RestApi):
    def _route_table(self) -> list[Route]:
        """Callback and webhook routes need no bot token: the interaction token is the key."""
        hook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        message = hook + r"/messages/(?P<mid>@original|\d+)"
        table: list[tuple[str, str, Handler, bool]] = [
            ("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._callback, False),
            ("POST", hook, self._post_followup, False),
            ("GET", message, self._get_hook_message, False),
            ("PATCH", message, self._edit_hook_message, False),
            ("DELETE", message, self._delete_hook_message, False),
        ]
        own = [(method, re.compile(pattern + "$"), h, auth) for method, pattern, h, auth in table]
        return super()._route_table() + own

    async def _callback(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._interactions_by_token.get(params["token"])
        if interaction is None or interaction.id != int(params["id"]):
            raise DiscordHTTPError(404, 10062, "Unknown interaction")
        elapsed = self._elapsed(interaction)
        if elapsed > self.ack_deadline:
            raise DiscordHTTPError(404, 10062, "Unknown interaction")
        if interaction.callback is not None:
            raise DiscordHTTPError(400, 40060, "Interaction has already been acknowledged.")
        callback_type = body.get("type")
        if callback_type not in ALLOWED_CALLBACKS[interaction.type]:
            self.errors.append(
                f"callback type {callback_type} is not valid for interaction type "
                f"{interaction.type}"
            )
            raise DiscordHTTPError(400, 50035, "Invalid Form Body")
        data = body.get("data") or {}
        message: dict[str, Any] | None = None
        if callback_type == CALLBACK_MESSAGE:
            self._accept_body(data, creating=True)
            message = self._create_message(
                interaction.payload["channel_id"],
                data,
                flags=data.get("flags", 0) & MESSAGE_FLAG_EPHEMERAL,
                interaction=interaction,
                via="interaction",
            )
            interaction.original_message_id = int(message["id"])
        elif callback_type == CALLBACK_DEFERRED_MESSAGE:
            flags = MESSAGE_FLAG_LOADING | (data.get("flags", 0) & MESSAGE_FLAG_EPHEMERAL)
            message = self._create_message(
                interaction.payload["channel_id"],
                {"content": ""},
                flags=flags,
                interaction=interaction,
                via="interaction",
            )
            interaction.original_message_id = int(message["id"])
        elif callback_type == CALLBACK_UPDATE_MESSAGE:
            self._accept_body(data, creating=False)
            message = self._edit(interaction.original_message_id, data, via="interaction")
        elif callback_type == CALLBACK_AUTOCOMPLETE and not isinstance(data.get("choices"), list):
            raise DiscordHTTPError(400, 50035, "Invalid Form Body")
        self._record(
            interaction, InteractionEvent("callback", elapsed, body, copy.deepcopy(message))
        )
        response: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": callback_type == CALLBACK_DEFERRED_MESSAGE,
                "response_message_ephemeral": bool(
                    message and message["flags"] & MESSAGE_FLAG_EPHEMERAL
                ),
            },
            "resource": {"type": callback_type},
        }
        if message is not None:
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"]["message"] = message
        elif callback_type == CALLBACK_DEFERRED_UPDATE and interaction.original_message_id:
            response["interaction"]["response_message_id"] = str(interaction.original_message_id)
        return json_response(response)

    def _hook_interaction(self, params: dict[str, str]) -> FakeInteraction:
        interaction = self._interactions_by_token.get(params["token"])
        if int(params["app"]) != self.application_id or interaction is None:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook")
        if self._elapsed(interaction) > self.token_lifetime:
            raise DiscordHTTPError(401, 50027, "Invalid Webhook Token")
        if interaction.callback is None:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook")
        return interaction

    def _hook_message_id(self, interaction: FakeInteraction, mid: str) -> int:
        if mid == "@original":
            if interaction.original_message_id is None:
                raise DiscordHTTPError(404, 10008, "Unknown Message")
            return interaction.original_message_id
        message_id = int(mid)
        owned = {interaction.original_message_id}
        owned.update(int(e.message["id"]) for e in interaction.followups() if e.message)
        if message_id not in owned or message_id not in self._messages:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return message_id

    async def _post_followup(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._hook_interaction(params)
        self._accept_body(body, creating=True)
        original = self._messages.get(interaction.original_message_id or 0)
        if original is not None and original["flags"] & MESSAGE_FLAG_LOADING:
            # Discord turns the first follow-up after a deferred "thinking" reply into that reply.
            message = self._edit(int(original["id"]), body, via="interaction", finish_loading=True)
        else:
            message = self._create_message(
                interaction.payload["channel_id"],
                body,
                flags=body.get("flags", 0) & MESSAGE_FLAG_EPHEMERAL,
                interaction=interaction,
                via="interaction",
            )
        self._record(
            interaction,
            InteractionEvent("followup", self._elapsed(interaction), body, copy.deepcopy(message)),
        )
        if request.query.get("wait") in ("true", "1", "True"):
            return json_response(message)
        return web.Response(status=204)

    async def _get_hook_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._hook_interaction(params)
        return json_response(self._messages[self._hook_message_id(interaction, params["mid"])])

    async def _edit_hook_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._hook_interaction(params)
        message_id = self._hook_message_id(interaction, params["mid"])
        self._accept_body(body, creating=False)
        message = self._edit(message_id, body, via="interaction", finish_loading=True)
        kind = "edit_original" if params["mid"] == "@original" else "edit_followup"
        self._record(
            interaction,
            InteractionEvent(kind, self._elapsed(interaction), body, copy.deepcopy(message)),
        )
        return json_response(message)

    async def _delete_hook_message(
        self, request: web.Request, params: dict[str, str], body: Any
    ) -> web.Response:
        interaction = self._hook_interaction(params)
        message_id = self._hook_message_id(interaction, params["mid"])
        message = self._delete(message_id, via="interaction")
        kind = "delete_original" if params["mid"] == "@original" else "delete_followup"
        self._record(interaction, InteractionEvent(kind, self._elapsed(interaction), {}, message))
        return web.Response(status=204)
