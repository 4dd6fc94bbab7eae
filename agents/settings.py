"""The agent's settings: one class, from flags, then the environment (prefix GPUPOOL_AGENT_),
then a TOML config file, then the defaults; read when an agent starts, never at import.

The config file is --config, else GPUPOOL_AGENT_CONFIG, else /etc/gpupool/agent.toml; its
keys are the fields' names (server, token, node, interval_s, ...). A config file named
explicitly must exist; the default one may be absent. An unknown key in it is an error (a
typo must not be silently ignored).
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agents.schema import MAX_REPORTS_PER_BATCH, NodeName

DEFAULT_CONFIG = Path("/etc/gpupool/agent.toml")


class AgentConfigError(Exception):
    """The config file is missing (when named), unreadable or wrong."""


def short_hostname() -> str:
    return socket.gethostname().split(".")[0].lower()


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUPOOL_AGENT_", extra="ignore")

    # The control plane, http(s)://HOST:PORT, and this node's own token (from `gpupool nodes
    # register`). Both needed unless the agent only prints one poll (--once).
    server: str = ""
    token: SecretStr = SecretStr("")
    # The node's name in the pool (default: this host's short name, lower case).
    node: NodeName = Field(default_factory=short_hostname)
    interval_s: float = Field(default=5.0, gt=0, le=3600)  # until the server asks otherwise
    # Reports kept while the server is away (720: an hour at 5 s); the oldest go first.
    buffer_size: int = Field(default=720, ge=1)
    batch_size: int = Field(default=100, ge=1, le=MAX_REPORTS_PER_BATCH)  # reports per POST
    simulated_gpus: int = Field(default=0, ge=0, le=64)  # 0: the real GPUs, through NVML
    timeout_s: float = Field(default=10.0, gt=0)  # one POST
    # Backoff while the server is away: from retry_min_s, doubling, up to retry_max_s.
    retry_min_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    config: Path = DEFAULT_CONFIG

    @field_validator("server")
    @classmethod
    def http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, not {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ConfigFileSource(settings_cls)


class ConfigFileSource(PydanticBaseSettingsSource):
    """The TOML config file; its path comes from the sources before it (flags, env)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        named = self.current_state.get("config")
        path = Path(named) if named else DEFAULT_CONFIG
        try:
            text = path.read_text()
        except FileNotFoundError:
            if named:
                raise AgentConfigError(f"config file {path} not found") from None
            return {}
        except OSError as error:
            raise AgentConfigError(f"cannot read config file {path}: {error}") from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise AgentConfigError(f"config file {path}: {error}") from None
        unknown = sorted(set(values) - set(self.settings_cls.model_fields) - {"config"})
        if unknown:
            known = ", ".join(name for name in self.settings_cls.model_fields if name != "config")
            raise AgentConfigError(
                f"config file {path}: unknown key(s) {', '.join(unknown)}; known: {known}"
            )
        return values


def load_settings(**flags: Any) -> AgentSettings:
    """Settings from the flags that were given (None: not given), the environment and the
    config file. Raises AgentConfigError or pydantic's ValidationError."""
    return AgentSettings(**{name: value for name, value in flags.items() if value is not None})
