"""A checked description becomes an `Adapter`, the same kind of value as a built-in one.

The rest of the gateway cannot tell a preset, a provider described in the config file and a
built-in apart: verify, normalize (and normalize_all for `each`), sign and sample behave alike.
"""

from __future__ import annotations

import re
from datetime import datetime

from adapters.base import Adapter, AdapterOrigin, SourceSigner
from adapters.described.description import ProviderDescription, parse_description
from adapters.described.reading import EventReader
from adapters.described.samples import DescribedSamples
from adapters.described.schemes import (
    HmacScheme,
    KeyForm,
    PublicKeyScheme,
    StandardWebhooksScheme,
    public_key_problem,
    secret_problem,
)
from adapters.places import dotted, toml_kind
from adapters.source import SourceSettings
from adapters.toml_tables import UNRESOLVED, Checker, holds_unresolved

__all__ = ["described_adapter", "described_adapters"]

# A provider's name begins the type of its unmapped events (`<name>.<provider type>`) and is
# the CloudEvents `provider`: no dot, so that the type's first part is the name.
_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def described_adapter(
    name: str, description: ProviderDescription, origin: AdapterOrigin
) -> Adapter:
    """The adapter `name` of a checked description (`parse_description`)."""
    reader = EventReader(description.fields, description.types)
    scheme = description.scheme
    source_signer: SourceSigner | None = None
    if scheme is not None:
        sign = scheme.sign

        def sign_for_source(
            body: bytes, secret: str, now: datetime, settings: SourceSettings
        ) -> dict[str, str]:
            return sign(body, secret, now, settings.public_url)

        source_signer = sign_for_source
    return Adapter(
        name=name,
        read_facts=reader.read,
        check_signature=None if scheme is None else scheme.check,
        sign=None if scheme is None else scheme.sign,
        signature_headers=description.signature_headers,
        origin=origin,
        scheme=description.scheme_name,
        read_batch=None if description.fields.each is None else reader.read_all,
        sample=DescribedSamples(description.fields, description.types),
        source_signer=source_signer,
        signs_url=description.signs_url,
        check_source=lambda settings: _source_problems(description, settings),
    )


def described_adapters(checker: Checker, value: object, place: str) -> dict[str, Adapter]:
    """A config file's `[providers.<name>]` as adapters: those without a problem (every problem
    of the others is noted in `checker`, with its place)."""
    if not isinstance(value, dict):
        if value is not UNRESOLVED:
            checker.add(place, f"expected a table, got {toml_kind(value)}")
        return {}
    described: dict[str, Adapter] = {}
    for name, table in value.items():
        where = dotted(place, name)
        if not isinstance(table, dict):
            if table is not UNRESOLVED:
                checker.add(where, f"expected a table, got {toml_kind(table)}")
            continue
        before = len(checker.problems)
        if not _PROVIDER_NAME.fullmatch(name):
            checker.add(
                where,
                "not a valid provider name: 1 to 64 of a-z0-9_- starting with a letter (its"
                " unmapped events are typed <name>.<provider type>)",
            )
        if holds_unresolved(table):
            continue  # its unset variables are reported; the rest cannot be judged without them
        description, problems = parse_description(table, where)
        checker.problems += problems
        if description is not None and len(checker.problems) == before:
            described[name] = described_adapter(name, description, "config")
    return described


def _source_problems(
    description: ProviderDescription, settings: SourceSettings
) -> list[tuple[str, str]]:
    """The source's secrets in the description's key form, its public key of the algorithm."""
    scheme = description.scheme
    problems: list[tuple[str, str]] = []
    if isinstance(scheme, HmacScheme | StandardWebhooksScheme):
        form: KeyForm = scheme.key if isinstance(scheme, HmacScheme) else "whsec"
        for index, secret in enumerate(settings.secrets):
            problem = secret_problem(secret.reveal(), form)
            if problem is not None:
                where = "secret" if len(settings.secrets) == 1 else f"secrets[{index}]"
                problems.append((where, problem))
    if isinstance(scheme, PublicKeyScheme) and settings.public_key is not None:
        problem = public_key_problem(settings.public_key, scheme.algorithm)
        if problem is not None:
            problems.append(("public_key", problem))
    return problems
