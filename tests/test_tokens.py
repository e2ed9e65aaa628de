"""Session tokens: signed, verified, refused when forged or expired."""

from __future__ import annotations

import pytest

from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.tokens import SessionClaims, Signer

CLAIMS = SessionClaims("sid1", "ann", ("a", "b"))


def test_a_token_carries_its_claims() -> None:
    signer = Signer("a secret of enough length")
    assert signer.verify(signer.issue(CLAIMS)) == CLAIMS
    assert Signer("a secret of enough length").verify(signer.issue(CLAIMS)) == CLAIMS


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", Signer("another secret, not ours").issue(CLAIMS)],
)
def test_forged_or_garbage_tokens_are_unauthorized(token: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        Signer("a secret of enough length").verify(token)
    assert (caught.value.code, caught.value.message) == (
        ErrorCode.UNAUTHORIZED, "invalid session token"
    )  # fmt: skip


def test_an_expired_token_says_so() -> None:
    token = Signer("a secret of enough length", lifetime=-10).issue(CLAIMS)
    with pytest.raises(ProtocolError) as caught:
        Signer("a secret of enough length").verify(token)
    assert (caught.value.code, caught.value.message) == (
        ErrorCode.UNAUTHORIZED, "the session token expired"
    )  # fmt: skip


def test_claims_change_rooms_and_session() -> None:
    assert CLAIMS.with_rooms(("c",)) == SessionClaims("sid1", "ann", ("c",))
    assert CLAIMS.renamed("sid2") == SessionClaims("sid2", "ann", ("a", "b"))
