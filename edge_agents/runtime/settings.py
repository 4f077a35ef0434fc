"""Settings every agent shares, read from FRAMEWIRE_* variables, a TOML file and secrets.

Sources, highest priority first: keyword arguments (the CLI), environment variables
(`FRAMEWIRE_BROKER_URL`, ...), the TOML file named by `FRAMEWIRE_CONFIG` (top-level keys are
shared; each agent also reads its own table, e.g. `[capture]`), then the defaults, which work
on a laptop. The MQTT password is never read from the environment: it comes from
`mqtt_password_file` or from `$CREDENTIALS_DIRECTORY/mqtt-password` (systemd LoadCredential=).
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from framewire.schemas import DEFAULT_PREFIX, check_identifier
from framewire.schemas.topics import check_prefix

CONFIG_ENV = "FRAMEWIRE_CONFIG"
CREDENTIAL_NAME = "mqtt-password"
SHARED_USER_KINDS = frozenset({"inference"})  # agents of these kinds share one broker user


def default_data_dir() -> Path:
    state = os.environ.get("STATE_DIRECTORY")  # systemd StateDirectory=
    if state:
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "framewire"


def _host_id() -> str:
    """The host name reduced to identifier characters, for default agent ids."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return (name.strip("-") or "host")[:40]


class BrokerAddress:
    """A parsed `mqtt://host:port` or `mqtts://host:port` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts"}:
            raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} has no host")
        if parts.password:
            raise ValueError("put the broker password in a file (mqtt_password_file), not a URL")
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname
        self.port = parts.port or (8883 if self.tls else 1883)
        self.username = parts.username


class _TomlSection(PydanticBaseSettingsSource):
    """Top-level keys of the TOML file plus the table named after the agent."""

    def __init__(self, settings_cls: type[BaseSettings], section: str | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        path = os.environ.get(CONFIG_ENV)
        if not path:
            return
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
        own = data.get(section, {}) if section else {}
        tables = {"capture", "inference", "ledger", "broker"}
        self._data = {k: v for k, v in data.items() if k not in tables}
        self._data.update(own)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class AgentSettings(BaseSettings):
    """What every framewire agent needs: where the broker is, who it is, where it keeps data."""

    model_config = SettingsConfigDict(
        env_prefix="FRAMEWIRE_", extra="forbid", validate_default=True
    )
    toml_section: ClassVar[str | None] = None
    agent_kind: ClassVar[str] = "agent"
    default_metrics_port: ClassVar[int] = 0

    broker_url: str = Field(
        default="mqtt://localhost:1883",
        description="Broker to use: mqtt://host:port, or mqtts://host:port for TLS.",
    )
    mqtt_username: str | None = Field(
        default=None, description="MQTT user name (one per agent in the shipped ACL)."
    )
    mqtt_password_file: Path | None = Field(
        default=None,
        description="File holding the MQTT password. Default: "
        "$CREDENTIALS_DIRECTORY/mqtt-password when systemd provides it.",
    )
    mqtt_ca_file: Path | None = Field(
        default=None, description="CA bundle for mqtts:// (system trust store when unset)."
    )
    mqtt_cert_file: Path | None = Field(
        default=None,
        description="Client certificate (PEM) for a broker that requires one (mutual TLS); "
        "with mqtt_key_file.",
    )
    mqtt_key_file: Path | None = Field(
        default=None, description="Private key of mqtt_cert_file (PEM, unencrypted)."
    )
    mqtt_keepalive: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive, seconds.")
    session_expiry: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="MQTT 5 session-expiry interval, seconds: how long the broker keeps this "
        "agent's subscriptions and queued messages while it is away (persistent agents only).",
    )
    topic_prefix: str = Field(default=DEFAULT_PREFIX, description="Root of every topic.")
    agent_id: str | None = Field(
        default=None,
        description="This agent's id, also its MQTT client id (framewire's broker binds it to "
        "the user). Default: the user name (capture, ledger); '<user>-<hostname>' (inference, "
        "whose agents share a user); '<kind>-<hostname>' when no user is set.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where agents keep their databases ($STATE_DIRECTORY under systemd).",
    )
    status_interval: float = Field(
        default=15.0, gt=0, description="Seconds between retained status heartbeats."
    )
    drain_timeout: float = Field(
        default=10.0, ge=0, description="Seconds to finish in-flight work on SIGTERM."
    )
    reconnect_max: float = Field(
        default=30.0, gt=0, description="Longest pause between reconnection attempts, seconds."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint; unset: the agent's own default "
        "(capture 9741, ledger 9742, inference 9743); 0: no endpoint.",
    )
    metrics_bind: str = Field(
        default="127.0.0.1", description="Address the metrics endpoint listens on."
    )
    ha_discovery: bool = Field(
        default=True, description="Announce the agent to Home Assistant (MQTT discovery)."
    )
    ha_prefix: str = Field(
        default="homeassistant", description="Home Assistant's MQTT discovery prefix."
    )
    ha_birth_delay: float = Field(
        default=5.0,
        ge=0,
        description="After Home Assistant comes online, re-announce within this many seconds "
        "(a random delay, so many agents do not announce at once).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json' writes one JSON object per log line."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSection(settings_cls, cls.toml_section))

    @field_validator("broker_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        BrokerAddress(value)
        return value

    @field_validator("topic_prefix", "ha_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        return check_prefix(value)

    @model_validator(mode="after")
    def _client_certificate_pair(self) -> AgentSettings:
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("mqtt_cert_file and mqtt_key_file must be set together")
        return self

    @model_validator(mode="after")
    def _fill_agent_id(self) -> AgentSettings:
        agent_id = self.agent_id
        if agent_id is None:
            agent_id = self._default_agent_id()
            # not through __setattr__: a default filled in here is not a value the user set
            self.__dict__["agent_id"] = agent_id
        check_identifier(agent_id, "agent_id")
        return self

    def _default_agent_id(self) -> str:
        """The id framewire's broker accepts for this agent's user: a client id must be the
        user name or start with '<user>-'. Inference agents share one user, so each adds its
        host name to stay distinct; a capture or ledger user is one agent's own."""
        user = self.username()
        if user is None:
            return f"{self.agent_kind}-{_host_id()}"
        if self.agent_kind in SHARED_USER_KINDS:
            return f"{user}-{_host_id()}"
        return user

    @property
    def metrics_endpoint(self) -> int:
        """The metrics port in force (0: none)."""
        return self.default_metrics_port if self.metrics_port is None else self.metrics_port

    @property
    def broker(self) -> BrokerAddress:
        return BrokerAddress(self.broker_url)

    @property
    def identity(self) -> str:
        assert self.agent_id is not None
        return self.agent_id

    def mqtt_password(self) -> SecretStr | None:
        path = self.mqtt_password_file
        if path is None:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            candidate = Path(creds) / CREDENTIAL_NAME if creds else None
            path = candidate if candidate and candidate.is_file() else None
        if path is None:
            return None
        return SecretStr(path.read_text(encoding="utf-8").strip())

    def username(self) -> str | None:
        return self.mqtt_username or self.broker.username
