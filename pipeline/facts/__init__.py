"""Reference facts joined to events: what a small model cannot remember, brought in from a compacted topic.

table.py     entity id → JSON object, bounded (pure)
reader.py    every worker reads the whole reference topic into its table at start, then keeps it current
join.py      an event's join field → its entity's facts, for the enriched record (pure, per batch)
prompt.py    the facts of a window's entities as prompt lines, bounded (pure)
"""
