"""The stock -> replica mapping, a replica's ordinal from its pod name, and the feed's split."""

from __future__ import annotations

import numpy as np
import pytest

from rtvol import sharding
from rtvol.features.online_replay import snapshot_batches
from rtvol.ingest_codec import decode
from rtvol.loadtest.feed import split


def test_replicas_own_disjoint_stocks_that_cover_them_all() -> None:
    masks = [sharding.owned(10, 3, i) for i in range(3)]
    assert (np.sum(masks, axis=0) == 1).all()
    assert np.flatnonzero(masks[1]).tolist() == [1, 4, 7]
    with pytest.raises(ValueError, match=r"ordinal 3 is not in 0\.\.2"):
        sharding.owned(10, 3, 3)


@pytest.mark.parametrize(("hostname", "ordinal"), [("rtvol-feature-2", 2), ("rtvol-feature-10", 10),
                                                   ("laptop", 0), ("rtvol-feature", 0)])
def test_the_ordinal_is_the_statefulset_pod_names_trailing_number(hostname: str, ordinal: int) -> None:
    assert sharding.ordinal_of(hostname) == ordinal


def test_the_feed_splits_a_message_by_owner_and_sends_every_replica_the_watermark() -> None:
    part = snapshot_batches(5, 1)[0]
    msgs = split(part, 600_000_000, 2)
    assert all(m is not None and m.watermark_us == 600_000_000 for m in msgs)
    assert [decode(m).stock_id.tolist() for m in msgs if m is not None] == [[0, 2, 4], [1, 3]]
    only_even = part.take(part.stock_id % 2 == 0)
    assert split(only_even, 0, 2)[1] is None  # nothing for replica 1: no message


@pytest.mark.parametrize("text", ["0/0", "2/2", "-1/2", "1/99999", "a/b", "1", "1/2/3", "", "9" * 5000])
def test_a_watch_shard_that_is_not_index_slash_count_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match=sharding.WATCH_SHARD) as e:
        sharding.parse_shard(text)
    assert len(str(e.value)) < 200  # a hostile value is not echoed whole


def test_a_watch_shard_round_trips() -> None:
    assert sharding.parse_shard(sharding.shard_metadata(3, 8)[1]) == (3, 8)
    assert sharding.parse_shard("0/1") == (0, 1)
