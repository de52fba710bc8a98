"""The Faust agents: they connect topics to the pipeline's stages. pipeline/worker.py registers them.

classify.py  events → validate → scheduler (batch → model → events.enriched / events.dlq / events.deferred)
             events.deferred → validate → scheduler's deferred lane
analyze.py   events.enriched → events.enriched.by-key → windows → events.summaries, events.stats.partials
             events.stats.partials → one merge per window → events.stats / events.alerts (when enabled)
"""
