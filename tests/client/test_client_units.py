"""The pure parts of the client: backoff delays and the dedup rule (frames from a server)."""

from __future__ import annotations

import pytest

from roomcast.client import Backoff
from roomcast.client.rooms import RoomTracker
from roomcast.testing import ServerProcess

from .conftest import ClientFactory


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    backoff = Backoff(base=0.1, factor=2.0, cap=1.0)
    assert [backoff.ceiling(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(2, rand=lambda: 0.5) == 0.2
    assert backoff.delay(2, rand=lambda: 0.0) == 0.0
    assert Backoff(base=0.1, jitter=False).delay(3) == pytest.approx(0.8)
    assert backoff.ceiling(10_000) == 1.0  # no float overflow
    assert all(0 <= backoff.delay(n) < backoff.ceiling(n) for n in range(20))
    assert not backoff.exhausted(10**6)
    assert Backoff(max_attempts=3).exhausted(3) and not Backoff(max_attempts=3).exhausted(2)
    with pytest.raises(ValueError):
        Backoff(factor=0.5)
    with pytest.raises(ValueError):
        Backoff(max_attempts=0)


async def test_tracker_drops_duplicates_and_old_messages(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    ok = await client.join("lobby")
    for n in (1, 2, 3):
        await client.publish("lobby", n)
    one, two, three = await client.history("lobby")
    tracker = RoomTracker()
    assert not tracker.accept(one)  # not in the room
    assert tracker.joined(ok) is False
    assert [tracker.accept(m) for m in (one, one, two, one, three, two)] == [
        True, False, True, False, True, False,
    ]  # fmt: skip
    assert tracker.position("lobby") == (ok["epoch"], 3)
    assert tracker.since("lobby") == {"epoch": ok["epoch"], "offset": 3}
    assert tracker.rejoined({**ok, "offset": 3, "recovered": True}) is False
    assert tracker.position("lobby") == (ok["epoch"], 3)
    # A new epoch (history lost) starts a new stream: offset 1 is new again.
    assert tracker.rejoined({**ok, "epoch": "0000beef", "offset": 0, "recovered": False})
    assert tracker.lost("lobby")
    assert tracker.accept({**one, "epoch": "0000beef"})
    assert not tracker.accept(three)  # a stale message of the old epoch
    assert tracker.position("lobby") == ("0000beef", 1)
    # An epoch never announced by a join is a new stream too (and the old one retires).
    assert tracker.accept({**three, "epoch": "0000cafe"})
    assert tracker.lost("lobby") and tracker.position("lobby") == ("0000cafe", 3)
    assert not tracker.accept({**three, "epoch": "0000beef", "offset": 9})
    tracker.forget("lobby")
    assert not tracker.accept({**two, "epoch": "0000beef"})
