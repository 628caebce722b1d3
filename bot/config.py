"""Configuration: one TOML file, overridable from the environment, validated at start-up.

Lookup order for the file: ``--config PATH``, ``$TWEETLIKE_CONFIG``, ``./config.toml``, else
built-in defaults. Any key can be overridden with ``TWEETLIKE_<SECTION>__<KEY>``; the
environment wins over the file. A bad value stops start-up with one line naming the key,
the value and what is allowed (:class:`bot.errors.ConfigError`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.errors import ConfigError
from bot.handles import normalize_handle
from bot.redaction import register_secrets
from bot.rules import DEFAULT_PROMPT_CHARS, PROMPT_CHARS_CEILING

ENV_PREFIX = "TWEETLIKE_"
DEFAULT_CONFIG_FILE = Path("config.toml")

_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse ``"30s"``, ``"15m"``, ``"6h"``, ``"1d"``, ``"1h30m"``; at least one second."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_PART.sub("", compact):
        raise ValueError(f"'{text}' is not a duration: use e.g. 30s, 15m, 6h, 1d or 1h30m")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(compact))
    if seconds < 1:
        raise ValueError(f"'{text}' is too short: the smallest duration is 1s")
    return timedelta(seconds=seconds)


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


def _check_cron(value: str | None) -> str | None:
    if value is not None:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(
                f"'{value}' is not a crontab expression (minute hour day month weekday): {exc}"
            ) from None
    return value


def _check_device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+|mps", value):
        raise ValueError("allowed: auto, cpu, cuda, cuda:N or mps")
    return value


def _check_handle(value: str) -> str:
    return normalize_handle(value)


Duration = Annotated[str | None, AfterValidator(_check_duration)]
Cron = Annotated[str | None, AfterValidator(_check_cron)]
Snowflake = Annotated[int, Field(gt=0, description="a Discord ID, as a string or integer")]
Handle = Annotated[str, AfterValidator(_check_handle)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DiscordSettings(_Section):
    token: SecretStr = SecretStr("")
    api_base_url: str = "https://discord.com/api/v10"
    guild_ids: list[Snowflake] = []
    operator_ids: list[Snowflake] = []
    operator_role_ids: list[Snowflake] = []
    cooldown_seconds: float = Field(3.0, ge=0, le=3600)
    max_prompt_chars: int = Field(DEFAULT_PROMPT_CHARS, ge=1, le=PROMPT_CHARS_CEILING)


class XSettings(_Section):
    bearer_token: SecretStr = SecretStr("")
    consumer_key: SecretStr = SecretStr("")
    consumer_secret: SecretStr = SecretStr("")
    access_token: SecretStr = SecretStr("")
    access_token_secret: SecretStr = SecretStr("")
    api_base_url: str = "https://api.twitter.com"
    max_tweets: int = Field(3200, ge=1, le=3200)

    @property
    def can_read(self) -> bool:
        return bool(self.bearer_token.get_secret_value())

    @property
    def can_post(self) -> bool:
        return all(
            s.get_secret_value()
            for s in (
                self.consumer_key,
                self.consumer_secret,
                self.access_token,
                self.access_token_secret,
            )
        )


class StorageSettings(_Section):
    models_dir: Path = Path("models")
    data_dir: Path = Path("data")
    database_url: str = "sqlite:///data/tweetlike.sqlite"
    keep_versions: int = Field(3, ge=1, le=100)


class GenerationSettings(_Section):
    device: Annotated[str, AfterValidator(_check_device)] = "auto"
    max_loaded_models: int = Field(4, ge=1, le=256)
    max_queue: int = Field(64, ge=1, le=100_000)
    max_batch_size: int = Field(16, ge=1, le=256)
    batch_window_ms: float = Field(5.0, ge=0, le=1000)
    max_new_tokens: int = Field(60, ge=1, le=512)
    request_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    novelty_guard: bool = True
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class TrainingSettings(_Section):
    base_model: str = Field("gpt2", min_length=1)
    auto_train_new_users: bool = True
    blocked_handles: list[Handle] = []
    epochs: int = Field(4, ge=1, le=100)
    learning_rate: float = Field(1.372e-4, gt=0, le=1)
    batch_size: int = Field(8, ge=1, le=1024)
    block_size: int = Field(128, ge=16, le=1024)
    validation_fraction: float = Field(0.1, ge=0, lt=0.5)
    collapse_newlines: bool = True
    seed: int = 42
    timeout_minutes: float = Field(120, gt=0, le=7 * 24 * 60)
    max_concurrent: int = Field(1, ge=1, le=16)
    on_interrupted: Literal["requeue", "fail"] = "requeue"


class AutopostSettings(_Section):
    handle: str
    channel_id: Snowflake
    every: Duration = None
    cron: Cron = None
    timezone: str = "UTC"
    prompts: list[Annotated[str, Field(max_length=PROMPT_CHARS_CEILING)]] = []
    post_to_x: bool = False

    @field_validator("handle")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return "-".join(normalize_handle(part) for part in value.split("-"))

    @model_validator(mode="after")
    def _one_trigger(self) -> AutopostSettings:
        if (self.every is None) == (self.cron is None):
            raise ValueError("set exactly one of 'every' (e.g. \"6h\") or 'cron'")
        return self


class RetrainSettings(_Section):
    every: Duration = None
    cron: Cron = None
    timezone: str = "UTC"
    min_new_tweets: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _at_most_one_trigger(self) -> RetrainSettings:
        if self.every is not None and self.cron is not None:
            raise ValueError("set only one of 'every' or 'cron'")
        return self


class Settings(BaseSettings):
    """The whole configuration. Built-in defaults run the demo and tests with no file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    discord: DiscordSettings = DiscordSettings()
    x: XSettings = XSettings()
    storage: StorageSettings = StorageSettings()
    generation: GenerationSettings = GenerationSettings()
    training: TrainingSettings = TrainingSettings()
    autopost: list[AutopostSettings] = []
    retrain: RetrainSettings = RetrainSettings()

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        register_secrets(self.secret_values())
        return self

    def secret_values(self) -> list[str]:
        """Every configured secret (tokens and X credentials), for redaction."""
        return [
            value.get_secret_value()
            for section in (self.discord, self.x)
            for value in section.__dict__.values()
            if isinstance(value, SecretStr)
        ]

    @model_validator(mode="after")
    def _autopost_prompts_fit(self) -> Settings:
        limit = self.discord.max_prompt_chars
        for n, entry in enumerate(self.autopost):
            for m, prompt in enumerate(entry.prompts):
                if len(" ".join(prompt.split())) > limit:
                    raise ValueError(
                        f"autopost.{n}.prompts.{m} is {len(prompt)} characters: "
                        f"discord.max_prompt_chars allows {limit}"
                    )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment must win over it.
        return (env_settings, init_settings)


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The file to read, or None for built-in defaults (see module docstring)."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    from_env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"config file {path} (from ${ENV_PREFIX}CONFIG) does not exist")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError with one clear line."""
    config_path = resolve_config_path(path)
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path} is not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc}") from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, config_path)) from None
    except ValueError:  # pydantic-settings: a list/object in the environment is not JSON
        raise ConfigError(_describe_bad_env_json()) from None


def _describe_bad_env_json() -> str:
    for name, value in sorted(os.environ.items()):
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        key = name.removeprefix(ENV_PREFIX).lower().replace("__", ".")
        if value.lstrip()[:1] in "[{":
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                shown = "<hidden>" if key.rsplit(".", 1)[-1] in _SECRET_KEYS else repr(value)
                return (
                    f"config error: ${name} = {shown}: not valid JSON ({exc.msg}); "
                    "lists are JSON in the environment, e.g. '[\"123456789012345678\"]'"
                )
    return "config error: a list or table value in the TWEETLIKE_* environment is not JSON"


_SECRET_KEYS = {
    "token",
    "bearer_token",
    "consumer_key",
    "consumer_secret",
    "access_token",
    "access_token_secret",
}


def describe_validation_error(exc: ValidationError, source: Path | None) -> str:
    """One line: where, which key, which value, what is allowed. Secrets are not echoed."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        where = f" in {source}" if source else ""
        return f"config error{where}: unknown key '{key}' (see config.example.toml for the keys)"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not loc:  # a check across keys names them in its message
        return f"config error{f' ({source})' if source else ''}: {message}"
    value = error.get("input")
    if loc and loc[-1] in _SECRET_KEYS:
        shown = "<hidden>"
    elif isinstance(value, dict):
        shown = None
    else:
        shown = repr(value)
    where = f" ({source})" if source else ""
    value_part = f" = {shown}" if shown is not None else ""
    return f"config error{where}: {key}{value_part}: {message}"
