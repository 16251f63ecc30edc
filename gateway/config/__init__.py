"""The configuration file (docs/reference/configuration.md): TOML in, typed Structs out, every
problem with its place.

The file is the picture of the running pipeline: sources (one provider account each, read by an
adapter), subscribers (where events go) and routes (which events go where). `types` says what
each section is, `loading` reads a file into them (with adapters/toml_tables.py, the converter
of a TOML table into a Struct's fields, problems and all, that provider descriptions use too).
"""

from __future__ import annotations

from pathlib import Path

from adapters.registry import shipped_adapters
from gateway.config.loading import load_config
from gateway.config.types import (
    AUTO,
    MAX_WORKERS,
    MIN_ADMIN_TOKEN_LENGTH,
    ROLES,
    AdminConfig,
    ConfigError,
    ConfigProblem,
    GatewayConfig,
    Role,
    ServerConfig,
    StoreConfig,
    worker_count,
)
from gateway.delivery.settings import STANDARD_WEBHOOKS_SCHEDULE, Ordering, SubscriberConfig
from gateway.delivery.settings.amqp import AmqpSubscriber
from gateway.delivery.settings.file import FileSubscriber
from gateway.delivery.settings.http import HttpSubscriber
from gateway.delivery.settings.nats_jetstream import NatsSubscriber
from gateway.delivery.settings.redis_streams import RedisSubscriber
from gateway.routing import RouteConfig

__all__ = [
    "AUTO",
    "DEFAULT_CONFIG_PATH",
    "MAX_WORKERS",
    "MIN_ADMIN_TOKEN_LENGTH",
    "ROLES",
    "STANDARD_WEBHOOKS_SCHEDULE",
    "AdminConfig",
    "AmqpSubscriber",
    "ConfigError",
    "ConfigProblem",
    "FileSubscriber",
    "GatewayConfig",
    "HttpSubscriber",
    "NatsSubscriber",
    "Ordering",
    "RedisSubscriber",
    "Role",
    "RouteConfig",
    "ServerConfig",
    "StoreConfig",
    "SubscriberConfig",
    "load_config",
    "shipped_adapters",
    "worker_count",
]

DEFAULT_CONFIG_PATH = Path("config/gateway.toml")
