"""Configuration: one TOML file, overridable from the environment, validated at start-up.

Lookup order for the file: ``--config PATH``, ``$TWEETLIKE_CONFIG``, ``./config.toml``, else
built-in defaults. Any key can be overridden with ``TWEETLIKE_<SECTION>__<KEY>``; the
environment wins over the file. A bad value stops start-up with one line naming the key,
the value and what is allowed (:class:`bot.errors.ConfigError`).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bot.errors import ConfigError, InvalidHandleError
from bot.handles import HANDLE_RULE, normalize_handle
from bot.redaction import register_secrets
from bot.rules import (
    DEFAULT_PROMPT_CHARS,
    MAX_EPOCHS,
    MAX_POST_LABEL_WEIGHT,
    MIN_EPOCHS,
    PROMPT_CHARS_CEILING,
    weighted_length,
)

ENV_PREFIX = "TWEETLIKE_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
DEFAULT_CONFIG_FILE = Path("config.toml")
DEFAULT_POST_LABEL = "🤖 AI-generated"
DEFAULT_DATABASE_URL = "sqlite:///data/tweetlike.sqlite"
DATABASE_URL_EXAMPLES = (
    "sqlite:///data/tweetlike.sqlite or postgresql+psycopg://user:password@host/dbname"
)

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
    try:
        return normalize_handle(value)
    except InvalidHandleError:  # pydantic reports a ValueError as a bad value of this key
        raise ValueError(f"not an X handle: use {HANDLE_RULE}") from None


def _check_timezone(value: str) -> str:
    if value != "UTC":  # APScheduler's own fast path, which needs no tz database
        from apscheduler.util import astimezone

        try:
            astimezone(value)
        except (KeyError, ValueError):  # zoneinfo's "not found" is a KeyError
            raise ValueError(
                "not a time zone: use an IANA name such as UTC or Europe/Paris"
            ) from None
    return value


def _check_database_url(value: str) -> str:
    """Parse the URL and load its driver as the job store will, so a typo or a missing
    driver stops start-up with one line instead of a traceback from SQLAlchemy."""
    if value == DEFAULT_DATABASE_URL:  # known good; spares every command SQLAlchemy's import
        return value
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(value).get_dialect().import_dbapi()
    except NoSuchModuleError:  # a kind of ArgumentError: catch it first
        raise ValueError(f"unknown database kind: use e.g. {DATABASE_URL_EXAMPLES}") from None
    except ArgumentError:
        raise ValueError(f"not a database URL: use e.g. {DATABASE_URL_EXAMPLES}") from None
    except ImportError as exc:
        raise ValueError(
            f"its database driver '{exc.name}' is not installed: pip install it into this "
            'environment (for PostgreSQL: pip install "psycopg[binary]")'
        ) from None
    return value


RAY_EXTRA = 'pip install "tweetlike[ray]"'
_RAY_ADDRESS = re.compile(r"auto|(ray://)?[^\s:/]+:\d{1,5}")


def ray_installed() -> bool:
    """Whether ``import ray`` would work, without paying for the import."""
    try:
        return importlib.util.find_spec("ray") is not None
    except ValueError:  # sys.modules["ray"] is None: importing it is blocked
        return False


def _check_ray_installed(value: str) -> str:
    if value == "ray" and not ray_installed():
        raise ValueError(f"needs Ray, which is not installed in this environment: {RAY_EXTRA}")
    return value


def _check_ray_address(value: str) -> str:
    if value and not _RAY_ADDRESS.fullmatch(value):
        raise ValueError(
            "allowed: empty (start a Ray cluster inside this process), auto (the cluster "
            "`ray start` began on this host), ray://host:10001 or host:port of a head node"
        )
    return value


Duration = Annotated[str | None, AfterValidator(_check_duration)]
Cron = Annotated[str | None, AfterValidator(_check_cron)]
Snowflake = Annotated[int, Field(gt=0, description="a Discord ID, as a string or integer")]
Handle = Annotated[str, AfterValidator(_check_handle)]
Timezone = Annotated[str, AfterValidator(_check_timezone)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DiscordSettings(_Section):
    token: SecretStr = SecretStr("")
    api_base_url: str = "https://discord.com/api/v10"
    guild_ids: list[Snowflake] = []
    operator_ids: list[Snowflake] = []
    operator_role_ids: list[Snowflake] = []
    # Per-member allowance (bot.core.rate_limit): a burst, refilled per minute; 0 = no limit.
    rate_limit_burst: int = Field(5, ge=1, le=100)
    rate_limit_per_minute: float = Field(20.0, ge=0, le=6000)
    # Deprecated: the fixed gap of earlier versions, read as rate_limit_per_minute.
    cooldown_seconds: float | None = Field(None, ge=0, le=3600)
    max_prompt_chars: int = Field(DEFAULT_PROMPT_CHARS, ge=1, le=PROMPT_CHARS_CEILING)
    # Splitting the gateway across processes (README: Scaling out): this process connects
    # shard_ids out of shard_count. Unset: every shard, as many as Discord recommends.
    shard_ids: list[Annotated[int, Field(ge=0)]] | None = None
    shard_count: int | None = Field(None, ge=1, le=100_000)

    _deprecations: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordSettings:
        ids = self.shard_ids
        if ids is None:
            return self
        if self.shard_count is None:
            raise ValueError(
                "discord.shard_ids needs discord.shard_count (the total across every process)"
            )
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(
                f"discord.shard_ids = {ids}: list each shard once, at least one (or leave it "
                "unset for all)"
            )
        outside = [shard for shard in ids if shard >= self.shard_count]
        if outside:
            raise ValueError(
                f"discord.shard_ids = {ids}: shards are numbered 0 to {self.shard_count - 1} "
                f"with discord.shard_count = {self.shard_count}"
            )
        return self

    @model_validator(mode="after")
    def _cooldown_is_a_rate(self) -> DiscordSettings:
        """Upgrades keep working: a gap of N seconds becomes the same sustained rate.

        The old key is then cleared, so these settings dumped and read again (the training
        subprocess gets them so) hold the new key only.
        """
        seconds = self.cooldown_seconds
        if seconds is None:
            return self
        if "rate_limit_per_minute" in self.model_fields_set:
            raise ValueError(
                "set discord.rate_limit_per_minute or discord.cooldown_seconds (its "
                "deprecated older form), not both"
            )
        self.rate_limit_per_minute = 60.0 / seconds if seconds else 0.0
        self.cooldown_seconds = None
        self._deprecations.append(
            f"discord.cooldown_seconds is deprecated; {seconds:g} is read as "
            f"discord.rate_limit_per_minute = {self.rate_limit_per_minute:g}. Members now get "
            f"a burst of discord.rate_limit_burst = {self.rate_limit_burst} requests, refilled "
            "at that rate: replace cooldown_seconds with those two keys (config.example.toml)"
        )
        return self

    def deprecation_notes(self) -> list[str]:
        """Keys that still work but should be replaced; logged at start-up."""
        return list(self._deprecations)


class XSettings(_Section):
    bearer_token: SecretStr = SecretStr("")
    consumer_key: SecretStr = SecretStr("")
    consumer_secret: SecretStr = SecretStr("")
    access_token: SecretStr = SecretStr("")
    access_token_secret: SecretStr = SecretStr("")
    api_base_url: str = "https://api.twitter.com"
    max_tweets: int = Field(3200, ge=1, le=3200)
    post_label: str = DEFAULT_POST_LABEL

    @field_validator("post_label")
    @classmethod
    def _label_every_post(cls, value: str) -> str:
        """A post to X speaks in a real person's voice: it always says it is generated."""
        label = " ".join(value.split())
        if not any(char.isprintable() and not char.isspace() for char in label):
            raise ValueError(
                "every post to X carries an AI label and it cannot be turned off: "
                f"set a short text such as {DEFAULT_POST_LABEL!r}"
            )
        if weighted_length(label) > MAX_POST_LABEL_WEIGHT:
            raise ValueError(
                f"weighs {weighted_length(label)} of X's characters; the limit is "
                f"{MAX_POST_LABEL_WEIGHT}, to leave the tweet its room"
            )
        return label

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
    database_url: Annotated[str, AfterValidator(_check_database_url)] = DEFAULT_DATABASE_URL
    keep_versions: int = Field(3, ge=1, le=100)


class GenerationSettings(_Section):
    # Where generation runs: "local" = the in-process engine; "ray" = Ray Serve replicas of
    # it ([ray], bot.generation.ray_backend; README: Scaling out).
    backend: Annotated[Literal["local", "ray"], AfterValidator(_check_ray_installed)] = "local"
    device: Annotated[str, AfterValidator(_check_device)] = "auto"
    max_loaded_models: int = Field(4, ge=1, le=256)
    max_queue: int = Field(64, ge=1, le=100_000)
    max_batch_size: int = Field(16, ge=1, le=256)
    batch_window_ms: float = Field(5.0, ge=0, le=1000)
    max_new_tokens: int = Field(60, ge=1, le=512)
    request_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    novelty_guard: bool = True
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # torch threads of the serving process (None = torch's default, one per core); the bot's
    # trainings get the cores these leave free (bot.cpu_share).
    threads: int | None = Field(None, ge=1, le=1024)
    # LoRA adapters are a few MB each: many more stay loaded than full models and bases,
    # which max_loaded_models bounds (bot.generation.registry).
    max_loaded_adapters: int = Field(256, ge=1, le=100_000)
    # int8 weights for the large matmuls (bot.generation.quantize): "auto" = int8 on a CPU
    # serving float32, float elsewhere.
    quantize: Literal["auto", "none", "int8"] = "auto"

    @model_validator(mode="after")
    def _int8_needs_float32(self) -> GenerationSettings:
        if self.quantize == "int8" and self.dtype in ("bfloat16", "float16"):
            raise ValueError(
                f"quantize = 'int8' runs on float32 activations but dtype is '{self.dtype}': "
                "set dtype to 'auto' or 'float32', or quantize to 'auto' or 'none'"
            )
        return self


class TrainingSettings(_Section):
    # How trainings run: "subprocess" = `python -m bot train` beside the leader
    # (bot.jobs.runner); "ray" = a Ray task on a worker, published here (bot.jobs.ray_runner).
    runner: Annotated[Literal["subprocess", "ray"], AfterValidator(_check_ray_installed)] = (
        "subprocess"
    )
    base_model: str = Field("gpt2", min_length=1)
    auto_train_new_users: bool = True
    blocked_handles: list[Handle] = []
    method: Literal["full", "lora"] = "full"
    # None = the recipe's default for the base and method (bot.training.recipes).
    epochs: int | None = Field(None, ge=MIN_EPOCHS, le=MAX_EPOCHS)
    learning_rate: float | None = Field(None, gt=0, le=1)
    lora_rank: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1, le=4096)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    batch_size: int = Field(8, ge=1, le=1024)
    block_size: int = Field(128, ge=16, le=1024)
    validation_fraction: float = Field(0.1, ge=0, lt=0.5)
    collapse_newlines: bool = True
    seed: int = 42
    timeout_minutes: float = Field(120, gt=0, le=7 * 24 * 60)
    max_concurrent: int = Field(1, ge=1, le=16)
    # The bot's training subprocess yields the CPU to serving (bot.cpu_share): niceness
    # added to the bot's (0 = the same priority) and torch threads (None = the cores that
    # generation.threads leaves free, at least 1).
    nice: int = Field(19, ge=0, le=19)
    threads: int | None = Field(None, ge=1, le=1024)
    on_interrupted: Literal["requeue", "fail"] = "requeue"


class AutopostSettings(_Section):
    handle: str
    channel_id: Snowflake
    every: Duration = None
    cron: Cron = None
    timezone: Timezone = "UTC"
    prompts: list[Annotated[str, Field(max_length=PROMPT_CHARS_CEILING)]] = []
    post_to_x: bool = False

    @field_validator("handle")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return "-".join(_check_handle(part) for part in value.split("-"))

    @model_validator(mode="after")
    def _one_trigger(self) -> AutopostSettings:
        if (self.every is None) == (self.cron is None):
            raise ValueError("set exactly one of 'every' (e.g. \"6h\") or 'cron'")
        return self


class RetrainSettings(_Section):
    every: Duration = None
    cron: Cron = None
    timezone: Timezone = "UTC"
    min_new_tweets: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _at_most_one_trigger(self) -> RetrainSettings:
        if self.every is not None and self.cron is not None:
            raise ValueError("set only one of 'every' or 'cron'")
        return self


class SchedulerSettings(_Section):
    # Exactly one process per database runs the scheduler and the training queue (the
    # leader, holding a lease in the database); the others set enabled = false and hand
    # their requests to it through the database (bot.jobs.leader_lease, bot.jobs.requests).
    enabled: bool = True
    # A leader that stops renewing its lease (renewed every third of it) is taken over after
    # this long; a leader that cannot renew for this long stops.
    lease_seconds: float = Field(30.0, ge=3, le=600)
    # How often the leader looks for requests from the other processes.
    poll_seconds: float = Field(0.5, ge=0.05, le=60)


class RaySettings(_Section):
    """The Ray cluster of ``generation.backend = "ray"`` and ``training.runner = "ray"``."""

    address: Annotated[str, AfterValidator(_check_ray_address)] = ""
    # The Serve application holding the generation replicas (one per bot on a shared cluster).
    app_name: str = Field("tweetlike", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    replicas: int = Field(1, ge=1, le=1024)
    cpus_per_replica: float = Field(1.0, ge=0, le=1024)
    # None: one GPU per replica (or training) when the cluster has GPUs, none otherwise.
    gpus_per_replica: float | None = Field(None, ge=0, le=64)
    cpus_per_training: float = Field(1.0, ge=0, le=1024)
    gpus_per_training: float | None = Field(None, ge=0, le=64)
    # Custom Ray resources a training needs, to place trainings on chosen nodes (started
    # with `ray start --resources='{"trainer": 1}'`).
    training_resources: dict[str, Annotated[float, Field(gt=0)]] = {}


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
    scheduler: SchedulerSettings = SchedulerSettings()
    ray: RaySettings = RaySettings()

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
        return _existing_file(Path(explicit), "--config")
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return _existing_file(Path(from_env), f"${CONFIG_ENV}")
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _existing_file(path: Path, named_by: str) -> Path:
    if path.is_dir():
        raise ConfigError(f"{named_by} names {path}, which is a folder, not a TOML file")
    if not path.is_file():
        raise ConfigError(f"{named_by} names {path}, which does not exist")
    return path


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError with one clear line."""
    config_path = resolve_config_path(path)
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", config_path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the file: {exc}", config_path) from None
    variables = config_variables(os.environ)
    for variable in variables:
        check_variable(variable)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(*describe_validation_error(exc, config_path, variables)) from None
    except SettingsError as exc:  # a value check_variable let through that the source refused
        raise ConfigError(str(exc), "environment") from None


@dataclass(frozen=True)
class ConfigVariable:
    """One ``TWEETLIKE_<SECTION>[__<KEY>]`` variable and the key path it sets."""

    name: str
    path: tuple[str, ...]
    value: str

    @property
    def key(self) -> str:
        return ".".join(self.path)


def config_variables(environ: Mapping[str, str]) -> list[ConfigVariable]:
    """The variables that set configuration, matched without regard to case as
    pydantic-settings matches them."""
    return [
        ConfigVariable(name, tuple(name[len(ENV_PREFIX) :].lower().split("__")), value)
        for name, value in sorted(environ.items())
        if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_ENV
    ]


def check_variable(variable: ConfigVariable) -> None:
    """Refuse a variable that sets no key (pydantic-settings would silently ignore a
    misspelt section) or whose list or table value is not JSON (pydantic-settings would
    fail without naming the variable)."""
    section, *keys = variable.path
    field = Settings.model_fields.get(section)
    if field is None:
        raise ConfigError(
            f"unknown section '{section}'{_suggestion(section, Settings.model_fields)}; "
            f"the sections are {', '.join(Settings.model_fields)}",
            f"${variable.name}",
        )
    model = field.annotation
    if keys:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(
                f"'{section}' is a list: set all of it as JSON in ${ENV_PREFIX}{section.upper()}",
                f"${variable.name}",
            )
        if len(keys) > 1 or keys[0] not in model.model_fields:
            raise ConfigError(
                f"unknown key '{variable.key}'{_suggestion(keys[0], model.model_fields)} "
                "(see config.example.toml for the keys)",
                f"${variable.name}",
            )
        shape = _json_shape(model.model_fields[keys[0]].annotation)
    else:
        shape = _json_shape(model)
    if shape is not None:
        _check_json(variable, shape)


def _json_shape(annotation: Any) -> str | None:
    """How the environment must spell a value of this type, or None for a plain string."""
    if get_origin(annotation) in (Union, UnionType):  # an optional list is still a list
        shapes = {_json_shape(arg) for arg in get_args(annotation) if arg is not type(None)}
        return next(iter(shapes)) if len(shapes) == 1 else None
    if get_origin(annotation) in (list, tuple, set):
        return 'a JSON list, e.g. \'["first", "second"]\''
    if get_origin(annotation) is dict or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel)
    ):
        return 'a JSON object, e.g. \'{"key": "value"}\''
    return None


def _check_json(variable: ConfigVariable, shape: str) -> None:
    try:
        json.loads(variable.value)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{variable.key}{_shown(variable.path, variable.value)}: not valid JSON "
            f"({exc.msg}); in the environment this value is {shape}",
            f"${variable.name}",
        ) from None


def _suggestion(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


_SECRET_KEYS = {
    "token",
    "bearer_token",
    "consumer_key",
    "consumer_secret",
    "access_token",
    "access_token_secret",
}
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _shown(loc: Sequence[str], value: Any) -> str:
    """`` = <value>`` as an error shows it: secrets hidden, a whole section not dumped."""
    if not loc or (len(loc) == 1 and isinstance(value, str | dict)):
        return ""  # a whole section: it may hold secrets, and the key says where to look
    if loc[-1] in _SECRET_KEYS:
        return " = <hidden>"
    if isinstance(value, dict):
        return ""
    if loc[-1] == "database_url" and isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\1***@", value)
    return f" = {value!r}"


def describe_validation_error(
    exc: ValidationError, source: Path | None, variables: Sequence[ConfigVariable] = ()
) -> tuple[str, str | None]:
    """The message and its origin (the file or the variable that set the bad value).

    One line: which key, which value, what is allowed. Secrets are not echoed.
    """
    errors = exc.errors(include_url=False)
    error = errors[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    origin = _origin(loc, variables) or (str(source) if source else None)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if error["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        return (
            f"unknown key '{key}'{_suggestion(loc[-1], known)} "
            f"(see config.example.toml for the keys){more}",
            origin,
        )
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not loc:  # a check across keys names them in its message
        return message + more, origin
    return f"{key}{_shown(loc, error.get('input'))}: {message}{more}", origin


def _origin(loc: Sequence[str], variables: Sequence[ConfigVariable]) -> str | None:
    """The variable that set the value at ``loc``; the environment wins over the file."""
    for variable in variables:
        depth = len(variable.path)
        if tuple(loc[:depth]) != variable.path:
            continue
        if depth == 1 and len(loc) > 1 and not _sets_key(variable.value, loc[1]):
            continue  # a whole-section variable that does not set this key
        return f"${variable.name}"
    return None


def _sets_key(value: str, key: str) -> bool:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return False
    return not isinstance(parsed, dict) or key in parsed


def _known_keys(loc: Sequence[str]) -> list[str]:
    """The keys allowed at ``loc`` (a section, or an entry of a list of tables)."""
    model: Any = Settings
    for part in loc:
        if part.isdigit():
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        model = fields[part].annotation
        if get_origin(model) is list:
            model = get_args(model)[0]
    return list(getattr(model, "model_fields", {}))
