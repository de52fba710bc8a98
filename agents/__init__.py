"""The Faust agents: they connect topics to the pipeline's stages.

classify.py  events → validate → scheduler (batch → model → events.enriched / events.dlq / events.deferred)
             events.deferred → validate → scheduler's deferred lane
analyze.py   events.enriched → windows → events.summaries / events.stats / events.alerts (when enabled)
"""

from agents import analyze, classify  # noqa: F401  (registers the agents with the app)
