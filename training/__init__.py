"""Training: Optiver data reader, synthetic generator, baselines, CNN, export."""
