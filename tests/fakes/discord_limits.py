"""Discord's limits on a message body; bodies past them are refused with 400 Invalid Form Body.

Real Discord would refuse these too, so a bot that sends one has a bug the tests should see.
"""

from __future__ import annotations

from typing import Any

CONTENT_LIMIT = 2000
EMBEDS_LIMIT = 10
EMBED_TOTAL_LIMIT = 6000
EMBED_FIELD_LIMITS = {"title": 256, "description": 4096}
EMBED_FIELDS_LIMIT = 25
ACTION_ROWS_LIMIT = 5
ROW_ITEMS_LIMIT = 5
CUSTOM_ID_LIMIT = 100
BUTTON_LABEL_LIMIT = 80


def message_body_problems(body: dict[str, Any], *, creating: bool) -> list[str]:
    """What Discord would reject in `body`; `creating` also requires something to show."""
    problems: list[str] = []
    content = body.get("content") or ""
    if len(content) > CONTENT_LIMIT:
        problems.append(f"content is {len(content)} characters (limit {CONTENT_LIMIT})")
    embeds = body.get("embeds") or []
    problems.extend(_embed_problems(embeds))
    components = body.get("components") or []
    problems.extend(_component_problems(components))
    shows_something = content or embeds or components or body.get("attachments")
    if creating and not shows_something and not body.get("poll"):
        problems.append("empty message (no content, embeds, components or files)")
    return problems


def _embed_problems(embeds: list[dict[str, Any]]) -> list[str]:
    problems = []
    if len(embeds) > EMBEDS_LIMIT:
        problems.append(f"{len(embeds)} embeds (limit {EMBEDS_LIMIT})")
    total = 0
    for index, embed in enumerate(embeds):
        for key, limit in EMBED_FIELD_LIMITS.items():
            text = embed.get(key) or ""
            total += len(text)
            if len(text) > limit:
                problems.append(f"embed {index} {key} is {len(text)} characters (limit {limit})")
        fields = embed.get("fields") or []
        if len(fields) > EMBED_FIELDS_LIMIT:
            problems.append(f"embed {index} has {len(fields)} fields (limit {EMBED_FIELDS_LIMIT})")
        total += sum(len(f.get("name", "")) + len(f.get("value", "")) for f in fields)
        total += len((embed.get("footer") or {}).get("text", ""))
        total += len((embed.get("author") or {}).get("name", ""))
    if total > EMBED_TOTAL_LIMIT:
        problems.append(f"embeds hold {total} characters (limit {EMBED_TOTAL_LIMIT})")
    return problems


def _component_problems(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    if len(rows) > ACTION_ROWS_LIMIT:
        problems.append(f"{len(rows)} action rows (limit {ACTION_ROWS_LIMIT})")
    custom_ids: list[str] = []
    for row in rows:
        items = row.get("components") or []
        if row.get("type") == 1 and len(items) > ROW_ITEMS_LIMIT:
            problems.append(f"an action row has {len(items)} items (limit {ROW_ITEMS_LIMIT})")
        for item in items:
            custom_id = item.get("custom_id")
            if custom_id is not None:
                custom_ids.append(custom_id)
                if len(custom_id) > CUSTOM_ID_LIMIT:
                    problems.append(f"custom_id {custom_id!r} is over {CUSTOM_ID_LIMIT} characters")
            if len(item.get("label") or "") > BUTTON_LABEL_LIMIT:
                problems.append(f"label {item['label']!r} is over {BUTTON_LABEL_LIMIT} characters")
    duplicates = {c for c in custom_ids if custom_ids.count(c) > 1}
    if duplicates:
        problems.append(f"duplicate custom_ids {sorted(duplicates)}")
    return problems
