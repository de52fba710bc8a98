"""The Faust agents: they connect topics to the pipeline's stages. pipeline/worker.py registers them.

classify.py  events → validate → scheduler (batch → model → events.enriched / events.dlq / events.deferred)
             events.deferred → validate → scheduler's deferred lane
analyze.py   events.enriched → windows → events.summaries / events.stats / events.alerts (when enabled)
"""
