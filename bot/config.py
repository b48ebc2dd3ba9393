"""Settings and the model catalogue, read from the environment once and validated."""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ApiStyle = Literal["chat", "text"]
API_STYLES: tuple[ApiStyle, ...] = ("chat", "text")

DEFAULT_DATABASE_PATH = "hfcord.sqlite3"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant chatting with people in a Discord channel. "
    "Answer clearly and concisely, using Discord markdown where it helps."
)
DEFAULT_HISTORY_MESSAGES = 20
DEFAULT_HISTORY_CHARS = 12_000
DEFAULT_REQUEST_TIMEOUT = 60.0
DEFAULT_RETRY_DEADLINE = 120.0
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_CHANNEL_QUEUE = 5
DEFAULT_USER_RATE = 10
DEFAULT_ATTACHMENT_BYTES = 100_000
DEFAULT_PARAMETERS: Mapping[str, Any] = MappingProxyType(
    {"max_new_tokens": 500, "temperature": 0.7, "top_p": 0.9}
)
# TGI rejects more than four stop sequences (422).
MAX_STOP_SEQUENCES = 4
ENV_EXAMPLE_HINT = "See .env.example for every variable and its meaning."

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_KNOWN_PARAMETERS = {
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
}


class ConfigError(Exception):
    """Every configuration problem found at start, in one readable message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"hfcord cannot start; fix the configuration:\n{lines}\n{ENV_EXAMPLE_HINT}"
        )


@dataclass(frozen=True)
class ModelSpec:
    """One model users can pick: how to reach it and how to call it."""

    name: str
    label: str
    hub_id: str
    endpoint: str | None
    api: ApiStyle = "chat"
    parameters: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_PARAMETERS)
    description: str = ""
    stream: bool | None = None  # None: follow the STREAMING setting

    def streams(self, default: bool) -> bool:
        """Whether answers from this model are streamed, given the global setting."""
        return default if self.stream is None else self.stream

    @property
    def endpoint_host(self) -> str:
        """The endpoint's host name, safe to log and show (no path, no query)."""
        if not self.endpoint:
            return "(no endpoint)"
        return urlsplit(self.endpoint).hostname or "(invalid endpoint)"

    @property
    def stop(self) -> tuple[str, ...]:
        """Extra stop sequences configured for this model."""
        value = self.parameters.get("stop", ())
        return tuple(value)


def default_catalogue(env: Mapping[str, str]) -> dict[str, ModelSpec]:
    """The brief's two models, wired to the endpoint variables."""
    standard = _clean(env.get("HUGGINGFACE_ENDPOINT"))
    unlearning = _clean(env.get("HUGGINGFACE_ENDPOINT_UNLEARNING")) or standard
    return {
        "llama-3.2-3b": ModelSpec(
            name="llama-3.2-3b",
            label="Llama 3.2 3B Instruct",
            hub_id="meta-llama/Llama-3.2-3B-Instruct",
            endpoint=standard,
            description="The standard model.",
        ),
        "unlearning-to-rest": ModelSpec(
            name="unlearning-to-rest",
            label="Unlearning to Rest",
            hub_id="martindisley/unlearning-to-rest",
            endpoint=unlearning,
            description="An ablated test model.",
        ),
    }


@dataclass(frozen=True)
class Settings:
    """Everything the bot reads from its environment, validated and immutable."""

    discord_token: str | None = field(repr=False)
    hf_token: str | None = field(repr=False)
    models: Mapping[str, ModelSpec]
    default_model: str
    database_path: Path = Path(DEFAULT_DATABASE_PATH)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    history_messages: int = DEFAULT_HISTORY_MESSAGES
    history_chars: int = DEFAULT_HISTORY_CHARS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    retry_deadline: float = DEFAULT_RETRY_DEADLINE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    channel_queue: int = DEFAULT_CHANNEL_QUEUE
    user_rate: int = DEFAULT_USER_RATE
    user_rate_per_server: bool = False
    attachment_bytes: int = DEFAULT_ATTACHMENT_BYTES
    streaming: bool = True
    log_level: str = "INFO"
    sync_guild_id: int | None = None
    message_content_intent: bool = False

    @property
    def hf_configured(self) -> bool:
        """Whether a Hugging Face token is set."""
        return bool(self.hf_token)

    def model(self, name: str | None) -> ModelSpec:
        """The named model, or the default when the name is unknown or missing."""
        if name is not None and name in self.models:
            return self.models[name]
        return self.models[self.default_model]

    def describe(self) -> list[str]:
        """Start-up summary lines: never a token, only endpoint hosts."""
        status = "Configured" if self.hf_configured else "Not configured"
        lines = [f"Hugging Face API: {status}"]
        for spec in self.models.values():
            marker = " (default)" if spec.name == self.default_model else ""
            lines.append(
                f"Model {spec.name}{marker}: {spec.hub_id} "
                f"via {spec.endpoint_host} ({spec.api} API)"
            )
        lines.append(f"Database: {self.database_path}")
        return lines

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, require_discord: bool = True) -> Settings:
        """Build settings from environment variables, collecting every problem."""
        problems: list[str] = []
        discord_token = _clean(env.get("DISCORD_TOKEN"))
        if require_discord and not discord_token:
            problems.append("DISCORD_TOKEN is not set: the bot token from the Developer Portal.")

        models = default_catalogue(env)
        models_file = _clean(env.get("MODELS_FILE"))
        if models_file:
            models = _merge_models_file(Path(models_file), models, problems)

        for spec in models.values():
            problems.extend(_model_problems(spec))

        default_model = _clean(env.get("DEFAULT_MODEL")) or next(iter(models), "")
        if default_model not in models:
            known = ", ".join(models) or "none"
            problems.append(f"DEFAULT_MODEL={default_model!r} is not in the catalogue ({known}).")

        history_messages = _int(env, "HISTORY_MAX_MESSAGES", DEFAULT_HISTORY_MESSAGES, problems)
        history_chars = _int(env, "HISTORY_MAX_CHARS", DEFAULT_HISTORY_CHARS, problems)
        timeout = _float(env, "HF_TIMEOUT_SECONDS", DEFAULT_REQUEST_TIMEOUT, problems)
        deadline = _float(env, "HF_RETRY_DEADLINE_SECONDS", DEFAULT_RETRY_DEADLINE, problems)
        concurrency = _int(env, "HF_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY, problems)
        channel_queue = _int(env, "CHANNEL_QUEUE_LIMIT", DEFAULT_CHANNEL_QUEUE, problems)
        user_rate = _int(env, "USER_RATE_LIMIT", DEFAULT_USER_RATE, problems, minimum=0)
        per_server = _bool(env, "USER_RATE_LIMIT_PER_SERVER", problems)
        attachment_bytes = _int(
            env, "ATTACHMENT_MAX_BYTES", DEFAULT_ATTACHMENT_BYTES, problems, minimum=0
        )
        guild = _clean(env.get("DISCORD_GUILD_ID"))
        sync_guild_id: int | None = None
        if guild:
            if guild.isdigit():
                sync_guild_id = int(guild)
            else:
                problems.append(f"DISCORD_GUILD_ID must be a numeric server id, got {guild!r}.")

        content_intent = _bool(env, "DISCORD_MESSAGE_CONTENT_INTENT", problems)
        streaming = _bool(env, "STREAMING", problems, default=True)
        log_level = (_clean(env.get("LOG_LEVEL")) or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            problems.append(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}.")

        if problems:
            raise ConfigError(problems)
        return cls(
            discord_token=discord_token,
            hf_token=_clean(env.get("HUGGINGFACE_API_TOKEN")),
            models=MappingProxyType(models),
            default_model=default_model,
            database_path=Path(_clean(env.get("DATABASE_PATH")) or DEFAULT_DATABASE_PATH),
            system_prompt=env.get("SYSTEM_PROMPT", "").strip() or DEFAULT_SYSTEM_PROMPT,
            history_messages=history_messages,
            history_chars=history_chars,
            request_timeout=timeout,
            retry_deadline=deadline,
            max_concurrency=concurrency,
            channel_queue=channel_queue,
            user_rate=user_rate,
            user_rate_per_server=per_server,
            attachment_bytes=attachment_bytes,
            streaming=streaming,
            log_level=log_level,
            sync_guild_id=sync_guild_id,
            message_content_intent=content_intent,
        )


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _bool(env: Mapping[str, str], key: str, problems: list[str], *, default: bool = False) -> bool:
    raw = (_clean(env.get(key)) or str(default)).lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw not in ("0", "false", "no", "off"):
        problems.append(f"{key} must be true or false, got {raw!r}.")
        return default
    return False


def _int(
    env: Mapping[str, str], key: str, default: int, problems: list[str], *, minimum: int = 1
) -> int:
    raw = _clean(env.get(key))
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{key} must be a whole number, got {raw!r}.")
        return default
    if value < minimum:
        problems.append(f"{key} must be at least {minimum}, got {value}.")
    return value


def _float(env: Mapping[str, str], key: str, default: float, problems: list[str]) -> float:
    raw = _clean(env.get(key))
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{key} must be a number of seconds, got {raw!r}.")
        return default
    if value <= 0:
        problems.append(f"{key} must be positive, got {value}.")
    return value


def _model_problems(spec: ModelSpec) -> list[str]:
    """What is wrong with one catalogue entry, in words a user can act on."""
    where = f"model {spec.name!r}"
    problems = []
    if not _MODEL_NAME.match(spec.name):
        problems.append(
            f"{where}: names use lower-case letters, digits, '.', '-' and '_' (at most 100)."
        )
    if not _HUB_ID.match(spec.hub_id):
        problems.append(
            f"{where}: hub_id {spec.hub_id!r} must be a Hugging Face Hub path like "
            "'owner/name' (not an Ollama-style tag)."
        )
    if not spec.endpoint:
        problems.append(
            f"{where}: no endpoint. Set HUGGINGFACE_ENDPOINT (or the model's endpoint in "
            "MODELS_FILE) to the Inference Endpoint URL."
        )
    else:
        parts = urlsplit(spec.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The value is not repeated: it might be a token pasted into the wrong variable.
            problems.append(f"{where}: endpoint must be an http(s) URL like https://host/...")
        elif parts.username or parts.password or parts.query:
            problems.append(f"{where}: endpoint must not carry credentials or a query string.")
    if spec.api not in API_STYLES:
        problems.append(f"{where}: api must be 'chat' or 'text', got {spec.api!r}.")
    problems.extend(f"{where}: {p}" for p in parameter_problems(spec.parameters, spec.api))
    return problems


def parameter_problems(params: Mapping[str, Any], api: str) -> list[str]:
    """Generation parameters that the endpoint would reject with a 422."""
    problems = []
    unknown = sorted(set(params) - _KNOWN_PARAMETERS)
    if unknown:
        problems.append(f"unknown parameter(s) {', '.join(unknown)}.")
    tokens = params.get("max_new_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        problems.append(f"max_new_tokens must be a positive whole number, got {tokens!r}.")
    temperature = params.get("temperature")
    if temperature is not None:
        if not _is_number(temperature) or temperature < 0:
            problems.append(f"temperature must be a number >= 0, got {temperature!r}.")
        elif api == "text" and temperature == 0:
            problems.append("temperature must be > 0 for the text API (use the chat API for 0).")
    top_p = params.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p < 1):
        problems.append(f"top_p must be strictly between 0 and 1, got {top_p!r}.")
    stop = params.get("stop", [])
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop):
        problems.append("stop must be a list of non-empty strings.")
    elif len(stop) > MAX_STOP_SEQUENCES - 1:
        # One slot is kept for the bot's own "\nUser:" stop sequence.
        problems.append(f"stop takes at most {MAX_STOP_SEQUENCES - 1} sequences.")
    return problems


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge_models_file(
    path: Path, models: dict[str, ModelSpec], problems: list[str]
) -> dict[str, ModelSpec]:
    """Add or replace catalogue entries from a TOML file of [[models]] tables."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"MODELS_FILE {str(path)!r} does not exist.")
        return models
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"MODELS_FILE {str(path)!r} cannot be read: {exc}.")
        return models

    entries = data.get("models", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append(f"MODELS_FILE {str(path)!r}: expected [[models]] tables.")
        return models
    merged = dict(models)
    if data.get("replace_defaults") is True:
        merged = {}
    for index, entry in enumerate(entries, start=1):
        spec = _spec_from_entry(entry, merged, f"MODELS_FILE entry {index}", problems)
        if spec is not None:
            merged[spec.name] = spec
    if not merged:
        problems.append(f"MODELS_FILE {str(path)!r} leaves the catalogue empty.")
    return merged


_ENTRY_KEYS = {
    "name",
    "label",
    "hub_id",
    "endpoint",
    "api",
    "parameters",
    "description",
    "stream",
}


def _spec_from_entry(
    entry: dict[str, Any], models: Mapping[str, ModelSpec], where: str, problems: list[str]
) -> ModelSpec | None:
    """One [[models]] table; an existing name keeps the fields the table leaves out."""
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: 'name' is required.")
        return None
    where = f"{where} ({name})"
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)}.")
    for key in ("label", "hub_id", "endpoint", "api", "description"):
        if key in entry and not isinstance(entry[key], str):
            problems.append(f"{where}: {key} must be a string.")
            return None
    if "stream" in entry and not isinstance(entry["stream"], bool):
        problems.append(f"{where}: stream must be true or false.")
        return None
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        problems.append(f"{where}: parameters must be a table.")
        return None

    base = models.get(name)
    if base is None:
        if "hub_id" not in entry:
            problems.append(f"{where}: a new model needs 'hub_id'.")
            return None
        base = ModelSpec(name=name, label=entry.get("label", name), hub_id="", endpoint=None)
    return replace(
        base,
        label=entry.get("label", base.label),
        hub_id=entry.get("hub_id", base.hub_id),
        endpoint=_clean(entry.get("endpoint")) or base.endpoint,
        api=entry.get("api", base.api),
        parameters=MappingProxyType({**base.parameters, **parameters}),
        description=entry.get("description", base.description),
        stream=entry.get("stream", base.stream),
    )
