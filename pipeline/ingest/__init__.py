"""Where data enters: raw Kafka messages become validated events or rejections (→ DLQ)."""
