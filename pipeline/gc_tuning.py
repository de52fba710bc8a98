"""The worker's cyclic garbage collector settings, applied once the models are loaded (pipeline/runtime.py).

CPython's defaults (thresholds 700, 10, 10) suit a short script, not a worker that moves tens of thousands of
events a second while holding ~100k objects of its own (Faust, aiokafka, pydantic, the models' Python side):
- a young collection runs whenever 700 more container objects are alive than at the last one, so every few
  dozen events; events held in a batch (an `Event`, its fields, its `Work`) are alive at that moment, survive,
  are promoted, and push the next full collection closer;
- each full collection walks every object in the process, the startup ones included.
Measured with `slmstream bench identity -n 40000` (identity model, this 2-core machine, busy): 280 young, 26
middle and 2-3 full collections per 40k events, 150-185 ms of CPU, ~4 µs an event (about 12% of the worker's
CPU); with the settings below, none while draining (2 young collections, no full one).

What it does:
- `gc.freeze()` after a full collection: everything alive at startup (modules, the app, the models) moves to
  the permanent generation, which collections skip. Garbage from the start was collected first, and nearly
  all of what is frozen lives as long as the worker; the price is that a frozen object that later ends up in
  a garbage cycle is never freed (reference counting still frees the rest), bounded by what startup held.
- a young threshold of 10,000: a collection runs after 10,000 more container objects are alive, not 700, so
  batches in flight are not promoted every few milliseconds. Reference cycles (asyncio's futures and
  tracebacks make some) are still found, later: at most ~10,000 objects of cycles wait, a few MB.
Reference counting frees everything else at once, as before: none of this changes when acyclic objects go.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # net new container objects between young collections (CPython: 700)
OLDER_THRESHOLD = 20  # collections of the generation below between two of the next (CPython: 10)


def settle_heap() -> int:
    """Collect, freeze what is alive and raise the thresholds; the number of objects frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    return gc.get_freeze_count()
