"""`POST /webhooks/{source}`: a provider's request in, a durable canonical event out (a batch
provider's several, in one commit, each with its own id and dedup: docs/reference/providers.md
`each`).

The checks run in the contract's order and the first that fails answers (docs/reference/ingress.md):
unknown source 404 -> size 413 (without reading past the limit) -> address 403 ->
authentication 401 -> payload 422 (the raw body kept in quarantine) -> store 503.
The 200 is sent only once the event and its deliveries are committed and fsync'd.

handler.py runs them; body.py reads the body within its bound; clients.py says who sent it;
quarantine.py what is kept with a payload that does not normalize; answers.py writes the answer.
"""

from gateway.ingress.clients import client_address
from gateway.ingress.handler import WEBHOOK_PREFIX, Ingress
from gateway.ingress.quarantine import quarantinable_headers

__all__ = ["WEBHOOK_PREFIX", "Ingress", "client_address", "quarantinable_headers"]
