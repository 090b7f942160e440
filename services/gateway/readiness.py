"""GET /readyz and the gRPC health status: ready once start-up has finished (tier 2's model
loaded, the volatility estimates read, the sidecar ready or given up on, every feature
replica's Watch stream open or given up on) and until the drain begins. A ready gateway
always answers: from tier 1, or from tier 2 when it has decided to (the body says which and
why). The feature store and, after start-up, the feature replicas are not part of readiness:
every gateway shares them, so one going away must not take all of them out of service (the
stocks of a replica not followed are answered from the store; the body counts them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the types only
    from rtvol.services.gateway.tier1 import Tier1
    from rtvol.services.gateway.watch import WindowWatch


class Readiness:
    def __init__(self, sidecar: Tier1 | None, watches: list[WindowWatch] | None = None) -> None:
        self.sidecar, self.watches = sidecar, watches or []
        self.step = "starting"  # what start-up is doing now; "" once it has finished
        self.draining = False

    def starting(self, step: str) -> None:
        self.step = f"starting: {step}"

    def started(self) -> None:
        self.step = ""

    def drain(self) -> None:
        self.draining = True

    def state(self) -> dict[str, Any]:
        """The /readyz body: ``ready``, the tier that answers now and why (``reason``), and with
        several feature replicas those whose Watch stream is open (``feature_replicas_followed``)."""
        if self.draining:
            return {"ready": False, "reason": "draining"}
        if self.step:
            return {"ready": False, "reason": self.step}
        out: dict[str, Any] = {"ready": True}
        if self.sidecar is None:
            out |= {"tier": 2, "reason": "no sidecar configured (--model-url)"}
        else:
            tier1, why = self.sidecar.status()
            out |= {"tier": 1 if tier1 else 2, "reason": why}
        if len(self.watches) > 1:  # one replica: the body it always had
            out["feature_replicas_followed"] = (f"{sum(w.connected() for w in self.watches)} of "
                                                f"{len(self.watches)}")
        return out
