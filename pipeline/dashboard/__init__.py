"""The live analyst dashboard: in-memory recent activity (live.py) and its page (page.py)."""
