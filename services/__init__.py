"""The three services; each runs as `rtvol serve <name>`."""
