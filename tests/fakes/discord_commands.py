"""Build the `data` of a slash-command interaction from the schema the bot synced.

Discord's client validates options before a command ever reaches a bot: required options are
present, values have the declared type and lie within min/max, lengths and choices, channels
are of an allowed type, and members only see commands their permissions allow. The fake
enforces the same, so a test can never send the bot something Discord would not.
"""

from __future__ import annotations

from typing import Any

from fakes.discord_model import FakeGuild

OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_MENTIONABLE = 9
OPTION_NUMBER = 10
SUBCOMMAND_TYPES = (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP)
ID_TYPES = (OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE)


class InvalidOptions(ValueError):
    """The test asked for an invocation Discord's client would refuse to send."""


def check_visible(command: dict[str, Any], guild: FakeGuild, user_id: int) -> None:
    """Members without a command's default_member_permissions cannot see or run it."""
    needed = command.get("default_member_permissions")
    if needed is None:
        return
    needed_bits = int(needed)
    if guild.permissions_of(user_id) & needed_bits != needed_bits:
        raise PermissionError(
            f"user {user_id} lacks default_member_permissions {needed} for /{command['name']}; "
            "Discord hides it (pass force=True to act as if an admin overrode it)"
        )


def command_data(
    command: dict[str, Any],
    command_guild: int | None,
    options: dict[str, Any],
    subcommand: str | None,
    guild: FakeGuild,
    bot_user_id: int,
    *,
    focused: str | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE `data` for `/command [subcommand] options`; `focused` = autocomplete."""
    schema = command.get("options", [])
    wrappers: list[dict[str, Any]] = []
    for part in (subcommand or "").split():
        match = next((o for o in schema if o["name"] == part), None)
        if match is None or match["type"] not in SUBCOMMAND_TYPES:
            raise InvalidOptions(f"/{command['name']} has no subcommand {part!r}")
        wrappers.append({"type": match["type"], "name": part, "options": []})
        schema = match.get("options", [])
    if any(o["type"] in SUBCOMMAND_TYPES for o in schema):
        raise InvalidOptions(f"/{command['name']} needs a subcommand")
    resolved: dict[str, dict[str, Any]] = {}
    leaf_options: list[dict[str, Any]] = []
    for key, value in options.items():
        spec = next((o for o in schema if o["name"] == key), None)
        if spec is None:
            raise InvalidOptions(f"/{command['name']} {subcommand or ''} has no option {key!r}")
        if key == focused:
            leaf_options.append({"name": key, "type": spec["type"], "value": str(value)})
            leaf_options[-1]["focused"] = True
            continue
        _check_value(command["name"], spec, value, guild)
        wire = str(value) if spec["type"] in ID_TYPES else value
        leaf_options.append({"name": key, "type": spec["type"], "value": wire})
        _resolve(spec["type"], value, guild, bot_user_id, resolved)
    if focused is None:
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in options]
        if missing:
            raise InvalidOptions(f"/{command['name']} is missing required options {missing}")
    for wrapper in reversed(wrappers):
        wrapper["options"] = leaf_options
        leaf_options = [wrapper]
    data: dict[str, Any] = {
        "id": command["id"],
        "name": command["name"],
        "type": 1,
        "options": leaf_options,
    }
    if command_guild is not None:
        data["guild_id"] = str(command_guild)
    if resolved:
        data["resolved"] = resolved
    return data


def _check_value(name: str, spec: dict[str, Any], value: Any, guild: FakeGuild) -> None:
    kind = spec["type"]
    label = f"/{name} option {spec['name']!r}"
    if kind == OPTION_STRING:
        if not isinstance(value, str):
            raise InvalidOptions(f"{label} must be a string, got {value!r}")
        if not spec.get("min_length", 0) <= len(value) <= spec.get("max_length", 6000):
            raise InvalidOptions(f"{label} length is out of bounds: {value!r}")
    elif kind in (OPTION_INTEGER, OPTION_NUMBER):
        allowed: tuple[type, ...] = (int,) if kind == OPTION_INTEGER else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise InvalidOptions(f"{label} must be a number of type {kind}, got {value!r}")
        low, high = spec.get("min_value"), spec.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise InvalidOptions(f"{label} must be within [{low}, {high}], got {value!r}")
    elif kind == OPTION_BOOLEAN and not isinstance(value, bool):
        raise InvalidOptions(f"{label} must be a bool, got {value!r}")
    elif kind in ID_TYPES and not str(value).isdigit():
        raise InvalidOptions(f"{label} must be an id, got {value!r}")
    elif kind == OPTION_CHANNEL:
        channel = guild.channel(int(value))
        types = spec.get("channel_types")
        if types and channel.type not in types:
            raise InvalidOptions(f"{label} accepts channel types {types}, not {channel.type}")
    choices = spec.get("choices")
    if choices and value not in [choice["value"] for choice in choices]:
        raise InvalidOptions(f"{label} must be one of its choices, got {value!r}")


def _resolve(
    option_type: int,
    value: Any,
    guild: FakeGuild,
    bot_user_id: int,
    resolved: dict[str, dict[str, Any]],
) -> None:
    """Discord sends the full objects behind id options in `data.resolved`."""
    if option_type not in ID_TYPES:
        return
    target = int(value)
    if option_type == OPTION_CHANNEL:
        channel = guild.channel(target)
        resolved.setdefault("channels", {})[str(target)] = {
            **channel.payload(),
            "permissions": str(guild.permissions_of(bot_user_id)),
        }
        return
    if option_type in (OPTION_USER, OPTION_MENTIONABLE) and target in guild.members:
        member = guild.members[target]
        resolved.setdefault("users", {})[str(target)] = member.user()
        member_data = member.payload(permissions=guild.permissions_of(target))
        member_data.pop("user")
        resolved.setdefault("members", {})[str(target)] = member_data
    elif option_type in (OPTION_ROLE, OPTION_MENTIONABLE) and target in guild.roles:
        resolved.setdefault("roles", {})[str(target)] = guild.roles[target].payload()
    else:
        raise InvalidOptions(f"no user or role {target} in guild {guild.id}")
