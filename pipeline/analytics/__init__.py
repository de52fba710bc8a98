"""Window summaries, per-window stats and spike alerts over enriched records.

windows.py     per-key tumbling windows by event time (pure, clock passed in)
stats.py       counts per label of one window
alerts.py      per-label spikes against a rolling baseline
extractive.py  the texts nearest a window's embedding centroid
summarizer.py  abstractive or extractive per window (learnt generator time vs the budget), prompts
grounding.py   the names and numbers of a generated text that its messages and facts do not hold (pure)
records.py     the summary / alert records (schemas/*.schema.json), the readers' keep-the-highest rule
merge.py       per-partition partial counts → one stats record per window across workers (revisions)
restore.py     the latest stats records read back from Kafka at an assignment (merged windows, baselines)
runner.py      the async loop: windows → planner → model threads → sink → acks after the broker's
embedder.py    embeddings from the classifier's encoder, on its model thread
"""
