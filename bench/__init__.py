"""The bench harness: `slmstream bench ...` measures the bare model, the whole pipeline and its peers on the same
texts, in one run. It sits beside the product, not in it: `bench` imports `pipeline`, never the other way round.

How `slmstream` finds it. The `bench` package ships in the same wheel as `pipeline` (one distribution cannot
leave a package out by extra), and pyproject.toml declares it as a plugin:

    [project.entry-points."slmstream.commands"]
    bench = "bench.cli:app [bench]"

`pipeline.cli.main()` reads that entry point group when it runs (importlib.metadata; nothing at import). With
the `bench` extra installed (`pip install 'slmstream[bench]'`: Quix Streams, matplotlib, py-spy) the commands
appear under `slmstream bench`; without it, `slmstream bench` says what to install. Entry points live in the
install metadata, so a tree that has none (infra/gpu/run_gpu_bench.sh's venv) runs `python -m bench ...`;
an editable install picks a new entry point up on reinstall (`make install` does it when pyproject.toml changes).

cli.py           every command (classify, compare, identity, summarize, model-server, gpu) and what they share
report.py        what they print
machine.py       a free port, an embedded broker for a run, versions and machine facts
stats.py         pure helpers: percentiles, latency summaries, rates, the open-loop schedule, targets
events.py        bench events: pre-encoded JSON with a `ts` slot filled in at send time (texts: pipeline.samples)
procstat.py      CPU time of processes and of the machine, from /proc
reader.py        a consumer reading topics from their start: the base of the result readers
loadgen.py       the open-loop sender (clock injectable) and the output reader

`bench classify`:
model.py         the bare model, in this process (run it before the worker starts)
pipeline.py      broker + worker + producer/consumer, the max-rate and latency steps

`bench compare` (ours vs the bare model, a naive Faust agent and Quix Streams) and `bench identity`:
steps.py         pure: the rate steps, the summary of a step (unanswered events count as infinitely late)
ratios.py        pure: max rate within the budget, p99 at an equal rate, the ratios
systems.py       each system under test as a process with its own input and output topic
naive_app.py     the naive Faust agent (one model call per event, in a thread)
quix_app.py      the Quix Streams peer (one model call per message)
compare.py       one broker, each system in turn: warm-up, steps; the identity max-rate run
plot.py          the PNG

`bench summarize`: summarize.py (window summaries under load).
`bench model-server`: model_server.py (socket overhead, 1..N workers sharing a server), noop_server.py (the
identity-model server it times against).
`bench gpu` (the GPU path; infra/gpu/ runs it on the lent machine):
gpu.py           bare model with and without IO binding, then broker + model server + N workers at rising rates
loadgen_mp.py    open-loop load from several sender processes, results read by several reader processes
"""
