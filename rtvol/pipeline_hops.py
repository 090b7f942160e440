"""The hops of the tick-to-signal pipeline, in order: what a signal's ``hops_us`` holds (wall
clock µs; 0 where not known) for a subscription that asked for them, and what the gateway's
``rtvol_gateway_pipeline_hop_seconds{hop}`` histogram times (each hop from the previous one).

- received: the feature service received the update that closed the step;
- applied: the apply of that message ended (the window changed);
- stored: the store write holding that window ended, if it ended before the Watch push
  (0: it came after; the store is not on the push path, only Ingest's end waits for it);
- sent: the feature service's Watch stream sent the window's batch;
- held: the gateway's Watch read the batch into its memory;
- formed: the pipeline took the window into an inference batch;
- call_start / call_end: the model call for that batch (tier 1's fan-in and sidecar, or tier 2);
- settled: the signal is in the gateway's memory (Predict answers it, waiting requests end);
- published: shared with the other gateway workers and handed to the Subscribe streams;
- pushed: a Subscribe stream wrote it.
"""

from __future__ import annotations

HOPS = ("received", "applied", "stored", "sent", "held", "formed", "call_start", "call_end", "settled",
        "published", "pushed")
NO_HOPS = (0,) * len(HOPS)  # a signal's hops where none are known (a redo, another worker's shard)
