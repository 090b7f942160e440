"""GET /readyz and the gRPC health status: ready once start-up has finished (tier 2's model
loaded, the volatility estimates read, the sidecar ready or given up on) and until the drain
begins. A ready gateway always answers: from tier 1, or from tier 2 when it has decided to
(the body says which and why). The feature store is not part of readiness: every replica
shares it, so it going away must not take all of them out of service (they answer stale)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the type only
    from rtvol.services.gateway.tier1 import Tier1


class Readiness:
    def __init__(self, sidecar: Tier1 | None) -> None:
        self.sidecar = sidecar
        self.step = "starting"  # what start-up is doing now; "" once it has finished
        self.draining = False

    def starting(self, step: str) -> None:
        self.step = f"starting: {step}"

    def started(self) -> None:
        self.step = ""

    def drain(self) -> None:
        self.draining = True

    def state(self) -> dict[str, Any]:
        """The /readyz body: ``ready``, and the tier that answers now and why (``reason``)."""
        if self.draining:
            return {"ready": False, "reason": "draining"}
        if self.step:
            return {"ready": False, "reason": self.step}
        if self.sidecar is None:
            return {"ready": True, "tier": 2, "reason": "no sidecar configured (--model-url)"}
        tier1, why = self.sidecar.status()
        return {"ready": True, "tier": 1 if tier1 else 2, "reason": why}
