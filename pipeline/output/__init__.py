"""Where results leave: the records written to `events.enriched`, `events.dlq` and `events.deferred`."""
