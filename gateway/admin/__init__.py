"""The admin API (api.py) and the operator page (page.py) under /admin (docs/reference/admin.md)."""
