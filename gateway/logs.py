"""structlog, configured once: one JSON object per line on stdout.

Every request line carries the request id and, once known, the event id. Nothing logged ever
holds a secret, token or signature: adapters' error details are written to be safe to show, and
settings wrap secrets in `Secret`, whose repr is a mask.
"""

from __future__ import annotations

import logging
import sys

import msgspec
import structlog

__all__ = ["configure_logging"]


def _render(_: object, __: str, event_dict: structlog.typing.EventDict) -> bytes:
    return msgspec.json.encode(event_dict, enc_hook=str)


def configure_logging(level: int = logging.INFO) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )
