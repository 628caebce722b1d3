"""Config loading: file lookup, environment overrides, one-line errors, secrets hidden."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import load_settings, parse_duration
from bot.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply_without_any_file() -> None:
    settings = load_settings()
    assert settings.training.base_model == "gpt2"
    assert settings.generation.max_loaded_models == 4
    assert settings.discord.api_base_url == "https://discord.com/api/v10"


def test_config_toml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    write(tmp_path, '[training]\nbase_model = "tiny"\n')
    assert load_settings().training.base_model == "tiny"


def test_tweetlike_config_env_names_the_file(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, "[generation]\nmax_queue = 7\n", "other.toml")
    monkeypatch.setenv("TWEETLIKE_CONFIG", str(path))
    assert load_settings().generation.max_queue == 7


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, '[discord]\ntoken = "from-file"\nguild_ids = [1]\n')
    monkeypatch.setenv("TWEETLIKE_DISCORD__TOKEN", "from-env")
    monkeypatch.setenv("TWEETLIKE_DISCORD__GUILD_IDS", '["123456789012345678"]')
    settings = load_settings(path)
    assert settings.discord.token.get_secret_value() == "from-env"
    assert settings.discord.guild_ids == [123456789012345678]


def test_discord_ids_accept_strings_and_integers(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\noperator_ids = ["42", 43]\n')
    assert load_settings(path).discord.operator_ids == [42, 43]


def test_bad_value_names_key_value_and_what_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, '[generation]\ndevice = "gpu"\n')
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert "generation.device" in message and "'gpu'" in message and "cuda:N" in message
    assert "\n" not in message


def test_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntokn = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'discord\.tokn'"):
        load_settings(path)


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[discord\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_secret_values_are_never_echoed_in_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TWEETLIKE_DISCORD__TOKEN", "")
    path = write(tmp_path, "[x]\nbearer_token = 12345\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert "12345" not in str(error.value) and "x.bearer_token" in str(error.value)


def test_secrets_are_masked_when_settings_are_printed(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "super-secret-token"\n')
    assert "super-secret-token" not in repr(load_settings(path))


def test_autopost_needs_exactly_one_trigger(tmp_path: Path) -> None:
    path = write(tmp_path, '[[autopost]]\nhandle = "fdgwhite"\nchannel_id = "1"\n')
    with pytest.raises(ConfigError, match="exactly one of 'every'"):
        load_settings(path)


def test_autopost_cron_is_validated(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[[autopost]]\nhandle = "fdgwhite"\nchannel_id = "1"\ncron = "61 * * * *"\n'
    )
    with pytest.raises(ConfigError, match=r"autopost\.0\.cron"):
        load_settings(path)


def test_blocked_handles_are_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, '[training]\nblocked_handles = ["@SomeOne"]\n')
    assert load_settings(path).training.blocked_handles == ["someone"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("6h", 21600), ("1d", 86400), ("1h30m", 5400)]
)
def test_durations_parse_down_to_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "0s", "soon", "5x", "-3m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_cli_reports_a_bad_config_in_one_line_and_exits_non_zero(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "[generation]\nmax_queue = 0\n")
    assert main(["--config", str(path), "models"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tweetlike: error: config error") and "generation.max_queue" in err
    assert len(err.splitlines()) == 1


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    assert load_settings(example).training.base_model == "gpt2"


@pytest.mark.parametrize("value", ["[123", "notjson", ""])
def test_malformed_json_list_in_the_environment_names_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWEETLIKE_DISCORD__GUILD_IDS", value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("config error ($TWEETLIKE_DISCORD__GUILD_IDS): discord.guild_ids")
    assert "not valid JSON" in message and "a JSON list" in message


def test_misspelt_section_in_the_environment_is_named_as_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWEETLIKE_GENERATON__DEVICE", "cpu")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert str(error.value) == (
        "config error ($TWEETLIKE_GENERATON__DEVICE): unknown section 'generaton' "
        "(did you mean 'generation'?); the sections are discord, x, storage, generation, "
        "training, autopost, retrain, scheduler, ray"
    )


@pytest.mark.parametrize(
    ("variable", "key"),
    [
        ("TWEETLIKE_DISCORD__TOKN", "discord.tokn"),
        ("TWEETLIKE_GENERATION__DEVICE__CUDA", "generation.device.cuda"),
        ("TWEETLIKE_DISCORD__", "discord."),
    ],
)
def test_unknown_key_in_the_environment_names_the_variable(
    variable: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert str(error.value).startswith(f"config error (${variable}): unknown key '{key}'")


def test_autopost_entries_in_the_environment_are_one_json_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWEETLIKE_AUTOPOST__HANDLE", "sample")
    with pytest.raises(ConfigError, match=r"set all of it as JSON in \$TWEETLIKE_AUTOPOST"):
        load_settings()


def test_a_whole_section_as_json_is_read_and_its_errors_hide_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWEETLIKE_X", '{"bearer_token": "tok-secret-1"')
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("config error ($TWEETLIKE_X): x: not valid JSON")
    assert "tok-secret-1" not in message
    monkeypatch.setenv("TWEETLIKE_X", '{"max_tweets": 10}')
    assert load_settings().x.max_tweets == 10


def test_a_bad_value_from_the_environment_blames_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[generation]\nmax_queue = 5\n")
    monkeypatch.setenv("TWEETLIKE_GENERATION__DEVICE", "gpu")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(error.value).startswith(
        "config error ($TWEETLIKE_GENERATION__DEVICE): generation.device = 'gpu': allowed:"
    )


def test_variable_names_match_without_regard_to_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("tweetlike_generation__max_queue", "9")
    assert load_settings().generation.max_queue == 9
    monkeypatch.setenv("tweetlike_generaton__max_queue", "9")
    with pytest.raises(ConfigError, match="unknown section 'generaton'"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[training]\nblocked_handles = ["ok", "not a handle!"]\n',
            "training.blocked_handles.1 = 'not a handle!': not an X handle",
        ),
        (
            '[[autopost]]\nhandle = "bad one"\nchannel_id = "1"\nevery = "6h"\n',
            "autopost.0.handle = 'bad one': not an X handle",
        ),
        (
            '[[autopost]]\nhandle = "a"\nchannel_id = "1"\nevery = "6h"\ntimezone = "Mars/Base"\n',
            "autopost.0.timezone = 'Mars/Base': not a time zone",
        ),
        ('[retrain]\nevery = "1d"\ntimezone = "Nowhere"\n', "retrain.timezone = 'Nowhere'"),
        ('[storage]\ndatabase_url = "nonsense"\n', "storage.database_url = 'nonsense': not a"),
        ('[storage]\ndatabase_url = "nosuchdb://h/x"\n', "unknown database kind"),
        ("[generaton]\ndevice = 'cpu'\n", "unknown key 'generaton' (did you mean 'generation'?)"),
        ("[discord]\ntoken = 5\nguild_ids = ['x']\n", "discord.token = <hidden>"),
    ],
)
def test_every_bad_file_value_is_one_config_error_line_with_exit_status_2(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, text)
    assert main(["--config", str(path), "models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tweetlike: error: config error ({path}): ")
    assert expected in err and len(err.splitlines()) == 1


def test_a_database_url_whose_driver_is_missing_names_it_and_hides_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # absent, whatever this venv holds
    path = write(tmp_path, '[storage]\ndatabase_url = "postgresql+psycopg://me:hunter22@db/x"\n')
    assert main(["--config", str(path), "models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tweetlike: error: config error ({path}): storage.database_url = ")
    assert "'postgresql+psycopg://me:***@db/x': its database driver 'psycopg' is not" in err
    assert "hunter22" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TWEETLIKE_GENERATON__DEVICE", "cpu", "unknown section 'generaton'"),
        ("TWEETLIKE_DISCORD__GUILD_IDS", "notjson", "discord.guild_ids = 'notjson': not valid"),
        ("TWEETLIKE_TRAINING__BLOCKED_HANDLES", '["no way"]', "training.blocked_handles.0"),
        ("TWEETLIKE_GENERATION__MAX_QUEUE", "many", "generation.max_queue = 'many'"),
    ],
)
def test_every_bad_variable_is_one_config_error_line_with_exit_status_2(
    variable: str,
    value: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tweetlike: error: config error (${variable}): ")
    assert expected in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--config", "{tmp}", "models"], {}, "--config names {tmp}, which is a folder"),
        (["--config", "{tmp}/no.toml", "models"], {}, "--config names {tmp}/no.toml, which"),
        (["models"], {"TWEETLIKE_CONFIG": "{tmp}/no.toml"}, "$TWEETLIKE_CONFIG names"),
        (["run"], {}, "discord.token is not set"),
    ],
)
def test_config_errors_outside_validation_share_the_prefix_and_exit_status(
    argv: list[str],
    env: dict[str, str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(tmp_path)))
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tweetlike: error: config error: ")
    assert expected.replace("{tmp}", str(tmp_path)) in err and len(err.splitlines()) == 1
