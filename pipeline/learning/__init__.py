"""Learning from analysts: their label corrections (feedback) train a head on the encoder's embeddings that is
blended with the zero-shot prototypes (head.py)."""
