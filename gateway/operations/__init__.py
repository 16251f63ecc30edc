"""Operator operations: each one a function over the store, which any shell (the CLI, the admin API,
the operator page) calls, returning Structs shaped as the admin API's JSON
(docs/reference/admin.md).

events.py (search, one event's detail), replay.py, dead_letters.py (pages, redrive),
subscribers.py (state and backlog, pause, resume, enable), quarantine.py (pages, reprocess,
drop); errors.py is what they refuse, paging.py and times.py the cursors, limits and times
they share. `gateway/reprocess.py` is the first of them."""
