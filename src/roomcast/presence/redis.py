"""Cluster-wide presence in Redis: per room a hash (session -> member) and a sorted set
(session -> expiry, Unix ms), in keys with the room's hash tag.

On a Redis Cluster every room's keys are in one slot, so its transactions and its
expiry script run on one master; refreshes go in a pipeline per master and sweeps run
per master, so a dead master holds up neither the other masters' rooms nor the
announcement of what was swept there."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from redis.asyncio.cluster import RedisCluster

from roomcast.brokers.redis_client import REDIS_ERRORS, Client, by_shard, connect, gate_for
from roomcast.exceptions import BrokerError
from roomcast.presence.base import PresenceStore
from roomcast.protocol import Member

EXPIRE_SCRIPT = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired == 0 then return {} end
local members = redis.call('HMGET', KEYS[1], unpack(expired))
redis.call('ZREM', KEYS[2], unpack(expired))
redis.call('HDEL', KEYS[1], unpack(expired))
return members
"""

log = logging.getLogger("roomcast.presence")
_decode_member = msgspec.json.Decoder(Member).decode
_encode = msgspec.json.Encoder().encode


class RedisPresence(PresenceStore):
    def __init__(self, url: str, *, ttl: float = 30.0, prefix: str = "roomcast") -> None:
        self.ttl = ttl
        self.interval = ttl / 3
        self.prefix = prefix
        self._redis: Client = connect(url)
        self._gate = gate_for(self._redis)  # a cluster client's pools do not wait
        self._cluster = isinstance(self._redis, RedisCluster)
        self._expire_script = self._redis.register_script(EXPIRE_SCRIPT)

    def _keys(self, room: str) -> tuple[str, str]:
        base = f"{self.prefix}:{{{room}}}:presence"
        return base, base + ":exp"

    def _deadline(self, ttl: float | None = None) -> int:
        return int((time.time() + (self.ttl if ttl is None else ttl)) * 1000)

    async def close(self) -> None:
        await self._redis.aclose()

    async def add(self, room: str, member: Member, ttl: float | None = None) -> bool:
        members, expiry = self._keys(room)
        try:
            async with self._gate, self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(members, member.session, _encode(member))
                pipe.zadd(expiry, {member.session: self._deadline(ttl)})
                added, _ = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc
        return bool(added)

    async def remove(self, room: str, member: Member) -> bool:
        members, expiry = self._keys(room)
        try:
            async with self._gate, self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(members, member.session)
                pipe.zrem(expiry, member.session)
                removed, _ = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc
        return bool(removed)

    async def members(self, room: str) -> list[Member]:
        members, expiry = self._keys(room)
        now = int(time.time() * 1000)
        try:
            async with self._gate:
                live: Any = await self._redis.zrangebyscore(expiry, f"({now}", "+inf")
                if not live:
                    return []
                raw: Any = await self._redis.hmget(members, live)
        except REDIS_ERRORS as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc
        return [_decode_member(item) for item in raw if item is not None]

    async def refresh(self, rooms: dict[str, list[Member]]) -> None:
        """One pipeline per master (one in all without a cluster); fails only if every
        one failed, so that the sweep still runs where it can."""
        deadline = self._deadline()
        groups = by_shard(self._redis, rooms.items(), lambda item: self._keys(item[0])[0])
        results = await asyncio.gather(
            *(self._refresh(group, deadline) for group in groups), return_exceptions=True
        )
        failed = _failures(results)
        if failed and len(failed) == len(results):
            raise BrokerError(f"presence refresh failed: {failed[0]}") from failed[0]
        for error in failed:
            log.warning("presence refresh failed on one shard: %s", error)

    async def _refresh(self, group: list[tuple[str, list[Member]]], deadline: int) -> None:
        async with self._gate, self._redis.pipeline(transaction=False) as pipe:
            for room, members in group:
                hash_key, expiry = self._keys(room)
                pipe.hset(hash_key, mapping={m.session: _encode(m) for m in members})
                pipe.zadd(expiry, {m.session: deadline for m in members})
            await pipe.execute()

    async def expire(self, rooms: list[str]) -> dict[str, list[Member]]:
        """Sweep room after room, the masters of a cluster at once; a master that fails
        is left for the next sweep. What was swept is returned (to be announced) unless
        nothing could be swept at all."""
        now = int(time.time() * 1000)
        gone: dict[str, list[Member]] = {}
        groups = by_shard(self._redis, rooms, lambda room: self._keys(room)[0])
        results = await asyncio.gather(
            *(self._expire(group, now, gone) for group in groups), return_exceptions=True
        )
        failed = _failures(results)
        if failed and len(failed) == len(results) and not gone:
            raise BrokerError(f"presence sweep failed: {failed[0]}") from failed[0]
        for error in failed:
            log.warning("presence sweep failed on one shard: %s", error)
        return gone

    async def _expire(self, rooms: list[str], now: int, gone: dict[str, list[Member]]) -> None:
        for room in rooms:
            keys = self._keys(room)
            async with self._gate:
                if self._cluster:  # EVAL: a restarted master has lost its script cache
                    raw: Any = await self._redis.execute_command(
                        "EVAL", EXPIRE_SCRIPT, 2, *keys, now
                    )
                else:
                    raw = await self._expire_script(keys=list(keys), args=[now])
            members = [_decode_member(item) for item in raw if item]
            if members:
                gone[room] = members


def _failures(results: list[BaseException | None]) -> list[BaseException]:
    """The Redis failures among ``results``; anything else is raised."""
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, REDIS_ERRORS):
            raise result
    return [result for result in results if result is not None]
