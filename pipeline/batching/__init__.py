"""Where events wait for the model: deadline-aware micro-batching and the loop that feeds the model."""
