"""`slmstream bench`: measure the bare model and the whole pipeline on the same texts, in one run.

stats.py     pure helpers: percentiles, latency summaries, rates, the open-loop schedule, targets
events.py    bench events: pre-encoded JSON with a `ts` slot filled in at send time
model.py     the bare model, in this process (run it before the worker starts)
pipeline.py  broker + worker + producer/consumer: the max-rate and latency steps
"""
