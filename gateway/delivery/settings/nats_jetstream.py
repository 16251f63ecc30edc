"""`kind = "nats"`: a JetStream publish (gateway/delivery/nats_jetstream.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import msgspec

from gateway.broker_url import BrokerUrl
from gateway.delivery.settings import SubscriberConfig, host_url
from gateway.delivery.templates import template_problem

__all__ = ["NatsSubscriber"]

SCHEMES = ("nats", "tls")


def nats_url(url: BrokerUrl) -> BrokerUrl:
    host_url(url.reveal(), SCHEMES)
    return url


def nats_subject(subject: str) -> str:
    # JetStream publishes to one subject: `*` and `>` subscribe, they do not address.
    problem = template_problem(subject, "*>", empty_parts=False)
    if problem is not None:
        raise ValueError(problem)
    return subject


class NatsSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="nats"):
    """A JetStream publish on `subject`, a template of `{type}` and `{source}`."""

    kind: ClassVar[str] = "nats"
    required_hints: ClassVar[Mapping[str, str]] = {"url": ": nats:// or tls://..."}
    url: Annotated[BrokerUrl, nats_url]
    subject: Annotated[str, msgspec.Meta(min_length=1), nats_subject]
