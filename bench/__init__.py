"""`slmstream bench`: measure the bare model and the whole pipeline on the same texts, in one run.

stats.py         pure helpers: percentiles, latency summaries, rates, the open-loop schedule, targets
events.py        bench events: pre-encoded JSON with a `ts` slot filled in at send time
model.py         the bare model, in this process (run it before the worker starts)
pipeline.py      `bench classify`: broker + worker + producer/consumer, the max-rate and latency steps

`bench compare` (ours vs the bare model, a naive Faust agent and Quix Streams) and `bench identity`:
steps.py         pure: the rate steps, the summary of a step (unanswered events count as infinitely late)
ratios.py        pure: max rate within the budget, p99 at an equal rate, the ratios
loadgen.py       the open-loop sender and the output reader
systems.py       each system under test as a process with its own input and output topic
naive_app.py     the naive Faust agent (one model call per event, in a thread)
quix_app.py      the Quix Streams peer (one model call per message)
compare.py       one broker, each system in turn: warm-up, steps; the identity max-rate run
plot.py, report.py   the PNG and the printed tables

`bench gpu` (the GPU path; infra/gpu/ runs it on the lent machine):
gpu.py           bare model with and without IO binding, then broker + model server + N workers at rising rates
loadgen_mp.py    open-loop load from several sender processes, results read by several reader processes
"""
