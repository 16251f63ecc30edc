"""finrelay's service: ingress, store, routing, signing and delivery around the pure adapters."""

__version__ = "0.1.0"
