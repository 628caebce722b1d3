"""X handle rules and model names."""

import pytest

from bot.errors import BlockedHandleError, InvalidHandleError
from bot.handles import check_not_blocked, handles_of, model_name, normalize_handle


@pytest.mark.parametrize(
    ("raw", "expected"), [("fdgwhite", "fdgwhite"), ("@FdgWhite", "fdgwhite"), (" a_1 ", "a_1")]
)
def test_valid_handles_are_normalised(raw: str, expected: str) -> None:
    assert normalize_handle(raw) == expected


@pytest.mark.parametrize("raw", ["", "@", "a" * 16, "with space", "dash-ed", "émoji", "@@x"])
def test_invalid_handles_are_refused_with_the_rule(raw: str) -> None:
    with pytest.raises(InvalidHandleError, match="1-15 letters, digits or underscores"):
        normalize_handle(raw)


def test_combined_model_name_is_sorted_handles_joined_by_dash() -> None:
    assert model_name(["@Zeta", "alpha", "zeta"]) == "alpha-zeta"
    assert handles_of("alpha-zeta") == ["alpha", "zeta"]


def test_blocked_handle_is_refused_case_insensitively() -> None:
    with pytest.raises(BlockedHandleError, match="opted out"):
        check_not_blocked(["@OptedOut"], ["optedout"])
    check_not_blocked(["someone"], ["optedout"])
