"""The one feature definition shared by training and serving (see spec.py)."""

from rtvol.features.spec import (
    BUCKET_SECONDS,
    FEATURE_NAMES,
    N_FEATURES,
    STEP_SECONDS,
    STEPS,
    spec_hash,
)

__all__ = ["BUCKET_SECONDS", "FEATURE_NAMES", "N_FEATURES", "STEPS", "STEP_SECONDS", "spec_hash"]
