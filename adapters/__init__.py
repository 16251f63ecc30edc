"""Inbound adapters: one module per provider, each a pair of pure functions.

verify(request, settings, now) -> how the request was authenticated, or AuthenticationError;
normalize(body, headers, settings, received_at) -> CanonicalEvent, or InvalidPayload.
No I/O happens here: the gateway reads the request and stores the event.
"""
