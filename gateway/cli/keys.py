"""The commands over subscriber signing keys: `new-secret` makes one, `public-key` prints the
whpk_ keys a subscriber verifies v1a signatures with."""

from __future__ import annotations

import argparse
import sys

from gateway.cli.command import CONFIG, Command, argument
from gateway.cli.context import EXIT_OK, EXIT_PROBLEMS, command_config
from gateway.signing import new_secret, public_key_of


def run_new_secret(args: argparse.Namespace) -> int:
    """Print a fresh random subscriber secret; for whsk_, its whpk_ public key on stderr."""
    secret = new_secret(args.kind)
    print(secret)
    if args.kind == "whsk":
        print(f"public key (for the subscriber): {public_key_of(secret)}", file=sys.stderr)
    return EXIT_OK


def run_public_key(args: argparse.Namespace) -> int:
    """Print the whpk_ public keys a subscriber verifies v1a signatures with."""
    config = command_config(args.config, subscriber=args.subscriber)
    secrets = config.subscribers[args.subscriber].secrets
    if not secrets:
        print(f"{args.subscriber} has no secret: what it receives is not signed", file=sys.stderr)
        return EXIT_PROBLEMS
    keys = [
        public_key_of(secret.reveal()) for secret in secrets if secret.reveal().startswith("whsk_")
    ]
    if not keys:
        print(f"{args.subscriber} has no whsk_ signing key (it is signed with v1 only)")
        return EXIT_PROBLEMS
    print("\n".join(keys))
    return EXIT_OK


NEW_SECRET = Command(
    "new-secret",
    run_new_secret,
    summary="print a fresh random subscriber secret",
    description=(
        "Print a new random subscriber secret: whsec_ signs with v1 (HMAC-SHA256), whsk_ "
        "with v1a (Ed25519; its whpk_ public key, for the subscriber, goes to stderr)."
    ),
    arguments=(
        argument(
            "--kind",
            choices=("whsec", "whsk"),
            default="whsec",
            help="whsec (the default): an HMAC-SHA256 secret, for v1 signatures; whsk: an"
            " Ed25519 signing key, for v1a",
        ),
    ),
)

PUBLIC_KEY = Command(
    "public-key",
    run_public_key,
    summary="print the whpk_ key a subscriber verifies v1a signatures with",
    description=(
        "Print the whpk_ public key of each whsk_ secret of a subscriber, one a line: what "
        "the subscriber verifies v1a (Ed25519) signatures with. Exit 1 when it has none."
    ),
    arguments=(argument("subscriber", metavar="NAME"), CONFIG),
)
