"""Operator operations: each one a function over the store, which any shell (the CLI, an admin
API) calls. `gateway/reprocess.py` is the first of them."""
