"""Cluster-wide presence in Redis: per room a hash (session -> member) and a sorted set
(session -> expiry, Unix ms), in keys with the room's hash tag."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from roomcast.brokers.redis import connect
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

_decode_member = msgspec.json.Decoder(Member).decode
_encode = msgspec.json.Encoder().encode


class RedisPresence(PresenceStore):
    def __init__(self, url: str, *, ttl: float = 30.0, prefix: str = "roomcast") -> None:
        self.ttl = ttl
        self.interval = ttl / 3
        self.prefix = prefix
        self._redis: aioredis.Redis = connect(url)
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
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(members, member.session, _encode(member))
                pipe.zadd(expiry, {member.session: self._deadline(ttl)})
                added, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc
        return bool(added)

    async def remove(self, room: str, member: Member) -> bool:
        members, expiry = self._keys(room)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(members, member.session)
                pipe.zrem(expiry, member.session)
                removed, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc
        return bool(removed)

    async def members(self, room: str) -> list[Member]:
        members, expiry = self._keys(room)
        now = int(time.time() * 1000)
        try:
            live: Any = await self._redis.zrangebyscore(expiry, f"({now}", "+inf")
            if not live:
                return []
            raw: Any = await self._redis.hmget(members, live)
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc
        return [_decode_member(item) for item in raw if item is not None]

    async def refresh(self, rooms: dict[str, list[Member]]) -> None:
        deadline = self._deadline()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for room, members in rooms.items():
                    hash_key, expiry = self._keys(room)
                    pipe.hset(hash_key, mapping={m.session: _encode(m) for m in members})
                    pipe.zadd(expiry, {m.session: deadline for m in members})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence refresh failed: {exc}") from exc

    async def expire(self, rooms: list[str]) -> dict[str, list[Member]]:
        now = int(time.time() * 1000)
        gone: dict[str, list[Member]] = {}
        try:
            for room in rooms:
                raw: Any = await self._expire_script(keys=list(self._keys(room)), args=[now])
                members = [_decode_member(item) for item in raw if item]
                if members:
                    gone[room] = members
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence sweep failed: {exc}") from exc
        return gone
