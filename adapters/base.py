"""What every adapter is: two pure operations, verify and normalize.

An adapter module (`adapters/<provider>.py`) holds everything about one provider: its Structs,
its signature scheme, its type table and its mapping to `Facts`. This module holds what they
share: the `Adapter` value the registry lists, and `assemble_event`, the single place a
canonical event is built, so that every provider's events obey the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

from adapters.access import check_address, verify_unsigned
from adapters.decoding import payload_bytes
from adapters.errors import InvalidPayload
from adapters.request import InboundRequest
from adapters.source import SourceSettings
from schemas.event import Account, CanonicalEvent, EventData, Verification, canonical_event_id
from schemas.money import Money
from schemas.taxonomy import UNMAPPED, EventKind, canonical_status, kind_of

__all__ = [
    "Adapter",
    "AdapterOrigin",
    "BatchReader",
    "Facts",
    "SampleMaker",
    "SignatureCheck",
    "Signer",
    "SourceSigner",
    "account_event_account",
    "assemble_event",
    "map_type",
]

# (request, source settings, now) -> None, or raises InvalidSignature.
SignatureCheck = Callable[[InboundRequest, SourceSettings, datetime], None]
# (body, secret, now) -> the headers the provider would send: for tests, samples and benchmarks.
Signer = Callable[[bytes, str, datetime], dict[str, str]]
# (body, secret, now, settings) -> the same, for schemes that also sign something of the source
# (a described provider's `{url}`: the source's `public_url`).
SourceSigner = Callable[[bytes, str, datetime, SourceSettings], dict[str, str]]
# (body, headers, settings, received_at) -> what the provider says happened.
FactsReader = Callable[[bytes, Mapping[str, str], SourceSettings, datetime], "Facts"]
# The same for a body that carries several events: each one's facts and its own JSON, which
# becomes that event's `data.provider_payload`.
BatchReader = Callable[
    [bytes, Mapping[str, str], SourceSettings, datetime], "list[tuple[Facts, bytes]]"
]
# (provider or canonical type, None for a typical one; now) -> a sample body of that type.
SampleMaker = Callable[[str | None, datetime], bytes]
# Where an adapter comes from: code of ours, a preset file of ours, or the user's config file.
AdapterOrigin = Literal["builtin", "preset", "config"]

_MAX_ATTRIBUTE = 1024
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# Leaves room for `<adapter>.` within the 256 characters the schema allows a type.
_MAX_PROVIDER_TYPE = 200


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """What an adapter read from one webhook, before it becomes a canonical event.

    `canonical_type` is None when the provider type is not in the adapter's table: the event is
    then `<adapter>.<providertype>` of kind `unmapped`. There is no canonical status here: it
    follows from the type (`assemble_event`); `provider_status` is the provider's own word,
    verbatim, from the field docs/reference/event.md names for that provider.
    """

    providertype: str
    canonical_type: str | None
    idempotency_key: str
    occurred_at: datetime | None
    subject: str | None = None
    providerid: str | None = None
    object_id: str | None = None
    provider_status: str | None = None
    amount: Money | None = None
    counter_amount: Money | None = None
    account: Account | None = None
    balance: Money | None = None
    reference: str | None = None


def map_type(
    provider_type: str, table: Mapping[str, str], open_kinds: frozenset[str] = frozenset()
) -> str | None:
    """The canonical type of a provider type, or None when unmapped.

    `open_kinds` are kinds whose every action the provider may name as it likes (FinAegis's
    `workflow.*` and `system.*`).
    """
    mapped = table.get(provider_type)
    if mapped is not None:
        return mapped
    kind, dot, action = provider_type.partition(".")
    if dot and action and kind in open_kinds:
        return provider_type
    return None


def account_event_account(
    canonical_type: str | None, number: str | None, name: str | None, iban: str | None
) -> Account | None:
    """The account block of an `account.*` event (null for other kinds, whose object is a
    payment or a card, not an account)."""
    if canonical_type is None or not canonical_type.startswith("account."):
        return None
    return Account(number=number, name=name, iban=iban)


def assemble_event(
    adapter: str,
    facts: Facts,
    body: bytes,
    settings: SourceSettings,
    received_at: datetime,
    verification: Verification,
) -> CanonicalEvent:
    """The canonical event of `facts`: the one constructor every adapter goes through."""
    providertype = _attribute(facts.providertype, "providertype", _MAX_PROVIDER_TYPE)
    kind: EventKind
    status: str | None
    if facts.canonical_type is None:
        event_type = f"{adapter}.{providertype}"
        kind = UNMAPPED
        status = None
    else:
        event_type = facts.canonical_type
        kind = kind_of(event_type)
        status = canonical_status(event_type)
    if _CONTROL_CHARACTER.search(providertype):
        raise InvalidPayload("$", "the event type contains control characters")
    subject = msgspec.UNSET if facts.subject is None else _attribute(facts.subject, "subject")
    providerid = (
        msgspec.UNSET if facts.providerid is None else _attribute(facts.providerid, "providerid")
    )
    return CanonicalEvent(
        id=canonical_event_id(settings.name, facts.idempotency_key),
        source=settings.source_uri,
        type=event_type,
        subject=subject,
        time=facts.occurred_at or received_at,
        provider=adapter,
        providertype=providertype,
        providerid=providerid,
        verification=verification,
        data=EventData(
            kind=kind,
            id=facts.object_id,
            status=status,
            provider_status=facts.provider_status,
            amount=facts.amount,
            counter_amount=facts.counter_amount,
            account=facts.account,
            balance=facts.balance,
            reference=facts.reference,
            occurred_at=facts.occurred_at,
            provider_payload=msgspec.Raw(payload_bytes(body)),
        ),
    )


@dataclass(frozen=True, slots=True)
class Adapter:
    """One provider's way in: how its requests are authenticated and read.

    `check_signature` is None for providers that do not sign (FinchPay, account-lifecycle): their
    sources authenticate with a token and/or an address allow-list instead. `signature_headers`
    names every header the check reads a signature from (lower case), so that nothing keeps them
    once the request is authenticated (the quarantine).

    `scheme` is what `gateway providers` prints (`hmac`, `standard_webhooks`, `public_key`,
    `none`); left empty it is `hmac` for a signed adapter (every built-in one is) and `none`
    otherwise. `read_batch` is set for providers whose body carries several events (a described
    provider's `each`): `normalize_all` reads them all. `sample` makes a body for
    `gateway sample` (built-ins have theirs in adapters/samples.py). `source_signer` signs for
    a given source, where the scheme signs more than the body (`{url}`); `sign` cannot then.
    """

    name: str
    read_facts: FactsReader
    check_signature: SignatureCheck | None = None
    sign: Signer | None = None
    signature_headers: tuple[str, ...] = ()
    origin: AdapterOrigin = "builtin"
    scheme: str = ""
    read_batch: BatchReader | None = None
    sample: SampleMaker | None = None
    source_signer: SourceSigner | None = None
    # The signature covers the source's `public_url` (`{url}`): a source must set it.
    signs_url: bool = False
    # What is wrong with a source's key material for this adapter (a described provider's
    # secret not in its key form, a public key of another algorithm): (setting, message).
    check_source: Callable[[SourceSettings], list[tuple[str, str]]] | None = None
    # The source settings of its own it reads, which other adapters' sources may not set
    # (Finexer's `signature_header`).
    source_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.scheme:
            # Frozen: the one place the value is completed, before anyone can see it.
            object.__setattr__(self, "scheme", "hmac" if self.signed else "none")

    @property
    def signed(self) -> bool:
        return self.check_signature is not None

    @property
    def batch(self) -> bool:
        """Whether one body may carry several events (read them with `normalize_all`)."""
        return self.read_batch is not None

    def source_problems(self, settings: SourceSettings) -> list[tuple[str, str]]:
        """(setting, message) for each thing wrong with `settings`' keys for this adapter, for
        check-config: `("secrets[1]", "expected hex (the provider's key = 'hex')")`."""
        return [] if self.check_source is None else self.check_source(settings)

    def authentication_problems(
        self, given: Mapping[str, object], source: str
    ) -> list[tuple[str, str]]:
        """(setting, message) for what a source must set, and must not, to be authenticated by this
        adapter (docs/reference/ingress.md), from the settings its table `given` sets; "" is the
        source itself. A described provider is held to the same rules: only `scheme = "none"` goes
        without a signature, and then the source needs a token or an allow-list as any unsigned one
        does."""
        secret = "secrets" if "secrets" in given else "secret"
        has_token = "token" in given or "tokens" in given or given.get("allow_ips", []) != []
        problems: list[tuple[str, str]] = []
        if self.signs_url and "public_url" not in given:
            problems.append(
                (
                    "public_url",
                    f"required: {self.name} signs the URL it posts to; give it as the provider"
                    f" calls it (e.g. https://hooks.example.com/webhooks/{source})",
                )
            )
        elif "public_url" in given and not self.signs_url:
            problems.append(
                ("public_url", f"{self.name} does not sign the URL it posts to: remove it")
            )
        if self.scheme == "public_key":
            if "public_key" not in given:
                problems.append(
                    (
                        "public_key",
                        f"required: {self.name} signs with the provider's private key; give the"
                        " provider's public key (PEM)",
                    )
                )
            if secret in given:
                problems.append(
                    (
                        secret,
                        f"{self.name} verifies with a public key, not a secret: set public_key"
                        " instead",
                    )
                )
        else:
            if "public_key" in given:
                problems.append(
                    (
                        "public_key",
                        f"{self.name} does not verify with a public key ({self.scheme}): remove it",
                    )
                )
            if self.signed and secret not in given:
                problems.append(
                    (
                        "secret",
                        f"required: {self.name} signs its webhooks (or secrets = [...] during a"
                        " rotation)",
                    )
                )
            if not self.signed and secret in given:
                problems.append(
                    (secret, f"{self.name} does not sign its webhooks; use token or allow_ips")
                )
        unauthenticated = given.get("allow_unauthenticated") is True
        if self.signed and unauthenticated:
            problems.append(
                (
                    "allow_unauthenticated",
                    f"{self.name} signs its webhooks: every request is verified",
                )
            )
        elif unauthenticated and has_token:
            problems.append(
                (
                    "allow_unauthenticated",
                    "contradicts token/allow_ips: requests are authenticated; remove one of them",
                )
            )
        elif not self.signed and not unauthenticated and not has_token:
            problems.append(
                (
                    "",
                    f"{self.name} does not sign its webhooks: set token and/or allow_ips (or"
                    " allow_unauthenticated = true to accept anyone)",
                )
            )
        return problems

    def sign_for_source(
        self, body: bytes, secret: str, now: datetime, settings: SourceSettings
    ) -> dict[str, str]:
        """The headers the provider would send `body` to `settings`' source with.

        Raises ValueError for an adapter that does not sign.
        """
        if self.source_signer is not None:
            return self.source_signer(body, secret, now, settings)
        if self.sign is None:
            raise ValueError(f"{self.name} does not sign its webhooks")
        return self.sign(body, secret, now)

    def verify(
        self, request: InboundRequest, settings: SourceSettings, now: datetime
    ) -> Verification:
        """How the request is authenticated, or AuthenticationError saying what is wrong.

        The address allow-list runs first for every source (docs/reference/ingress.md: 403 before
        401). A signed source that also sets a token (Finexer suggests `?key=` in the URL) checks
        both.
        """
        check_address(request, settings)
        if self.check_signature is None:
            return verify_unsigned(request, settings)
        self.check_signature(request, settings, now)
        if settings.tokens:
            verify_unsigned(request, settings)
        return "signature"

    def normalize(
        self,
        body: bytes,
        headers: Mapping[str, str],
        settings: SourceSettings,
        received_at: datetime,
        verification: Verification = "none",
    ) -> CanonicalEvent:
        """The canonical event of a body, or InvalidPayload with the path and reason.

        A batch adapter's body must then carry exactly one event; callers that may see more
        call `normalize_all`.
        """
        if self.read_batch is not None:
            events = self.normalize_all(body, headers, settings, received_at, verification)
            if len(events) != 1:
                raise InvalidPayload("$", f"the body carries {len(events)} events, not one")
            return events[0]
        facts = self.read_facts(body, headers, settings, received_at)
        return assemble_event(self.name, facts, body, settings, received_at, verification)

    def normalize_all(
        self,
        body: bytes,
        headers: Mapping[str, str],
        settings: SourceSettings,
        received_at: datetime,
        verification: Verification = "none",
    ) -> list[CanonicalEvent]:
        """Every canonical event of a body: several for a batch adapter, else the one."""
        if self.read_batch is None:
            return [self.normalize(body, headers, settings, received_at, verification)]
        return [
            assemble_event(self.name, facts, payload, settings, received_at, verification)
            for facts, payload in self.read_batch(body, headers, settings, received_at)
        ]


def _attribute(value: str, name: str, limit: int = _MAX_ATTRIBUTE) -> str:
    if not value:
        raise InvalidPayload("$", f"the {name} is empty")
    if len(value) > limit:
        raise InvalidPayload("$", f"the {name} is longer than {limit} characters")
    return value
