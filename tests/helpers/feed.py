"""Feed the feature service with the tiny dataset's market data, bucket by bucket (the feed pump)."""

from rtvol.loadtest.feed import replay

__all__ = ["replay"]
