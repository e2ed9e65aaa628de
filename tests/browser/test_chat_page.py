"""The chat page in a real browser: live chat, presence, reconnects, reloads, small screens."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Locator, expect

from roomcast.testing import ServerProcess

from .conftest import (
    API_KEY,
    RECONNECT_TIMEOUT_MS,
    ChatPage,
    OpenChat,
    api_publish,
    ws_publish,
)

pytestmark = pytest.mark.browser

ServerFactory = Callable[..., ServerProcess]
CLOCK = re.compile(r"\d{1,2}:\d{2}")


def offsets(chat: ChatPage) -> list[int]:
    values = chat.messages.evaluate_all("items => items.map(item => item.dataset.offset)")
    return [int(value) for value in values]


def member_names(chat: ChatPage) -> Locator:
    return chat.page.locator("#members [data-testid=member] .member-name")


def test_two_pages_chat_and_presence(server: ServerProcess, open_chat: OpenChat) -> None:
    alice = open_chat(server, "alice", "lobby")
    bob = open_chat(server, "bob", "lobby")

    # Presence: both names, the page's own user first.
    expect(member_names(alice)).to_have_text(["alice", "bob"])
    expect(member_names(bob)).to_have_text(["bob", "alice"])
    expect(alice.page.locator("#member-count")).to_have_text("2")

    alice.say("hello bob")
    for chat in (alice, bob):
        expect(chat.messages).to_have_count(1)
        expect(chat.page.locator("#messages [data-testid=message-from]")).to_have_text(["alice"])
        expect(chat.texts).to_have_text(["hello bob"])
        expect(chat.page.locator("#messages [data-testid=message-time]")).to_have_text([CLOCK])
    expect(alice.page.locator("#message-input")).to_have_value("")

    # User text is shown as text, never parsed as markup.
    hostile = '<img src=x onerror="window.pwned=1"> & <b>bold</b>'
    bob.page.locator("#message-input").fill(hostile)
    bob.page.locator("#send").click()
    for chat in (alice, bob):
        expect(chat.texts).to_have_text(["hello bob", hostile])
        expect(chat.page.locator("#messages [data-testid=message-from]")).to_have_text(
            ["alice", "bob"]
        )
        assert chat.page.locator("#messages img, #messages b").count() == 0
        assert chat.page.evaluate("window.pwned") is None

    # Bob goes away: alice's member list follows the "left" event.
    bob.context.close()
    expect(member_names(alice)).to_have_text(["alice"])


def test_restart_shows_missed_messages_exactly_once(
    server_factory: ServerFactory, open_chat: OpenChat
) -> None:
    server = server_factory("--api-key", API_KEY)  # SQLite history: survives the restart
    chat = open_chat(server, "alice", "ops")

    for n in (1, 2, 3):
        api_publish(server, "ops", f"before {n}")
    chat.say("before 4 (alice)")
    expect(chat.texts).to_have_text(["before 1", "before 2", "before 3", "before 4 (alice)"])

    # Keep the page off the network so it cannot reconnect before the others publish;
    # its open WebSocket stays up until the server closes it with 1012.
    chat.context.set_offline(True)
    server.restart()
    expect(chat.status).not_to_have_attribute("data-state", "connected")
    api_publish(server, "ops", "missed 1")
    ws_publish(server, "bob", "ops", ["missed 2 (bob)", "missed 3 (bob)"])
    api_publish(server, "ops", "missed 4")
    expect(chat.messages).to_have_count(4)  # still disconnected: nothing new yet

    chat.context.set_offline(False)
    expect(chat.status).to_have_attribute("data-state", "connected", timeout=RECONNECT_TIMEOUT_MS)
    expect(chat.page.locator("#send")).to_be_enabled()
    # Anything duplicated by the recovery would arrive before this one: same connection.
    api_publish(server, "ops", "after")
    expected = [
        "before 1", "before 2", "before 3", "before 4 (alice)",
        "missed 1", "missed 2 (bob)", "missed 3 (bob)", "missed 4",
        "after",
    ]  # fmt: skip
    expect(chat.texts).to_have_text(expected)
    assert chat.messages.count() == len(expected)
    assert offsets(chat) == list(range(1, len(expected) + 1))
    expect(chat.page.locator("#messages [data-testid=message-from]")).to_have_text(
        ["server"] * 3 + ["alice", "server", "bob", "bob", "server", "server"]
    )
    expect(chat.page.locator("#messages [data-testid=notice]")).to_have_count(0)

    # The rejoin asked the server to replay from the last offset shown.
    last_join = chat.joins("ops")[-1]
    assert last_join["since"]["offset"] == 4
    assert last_join["since"]["epoch"] == chat.messages.first.get_attribute("data-epoch")


def test_reconnects_by_itself_with_backoff(
    server_factory: ServerFactory, open_chat: OpenChat
) -> None:
    """No network tricks: the page notices the restart and comes back on its own timer."""
    server = server_factory("--api-key", API_KEY)
    chat = open_chat(server, "frank", "ops")
    api_publish(server, "ops", "one")
    expect(chat.texts).to_have_text(["one"])

    server.stop()
    expect(chat.status).to_have_attribute("data-state", "reconnecting")
    expect(chat.page.locator("#send")).to_be_disabled()
    server.start()
    api_publish(server, "ops", "two")  # before or after the page is back: either way once
    expect(chat.status).to_have_attribute("data-state", "connected", timeout=RECONNECT_TIMEOUT_MS)
    api_publish(server, "ops", "three")
    expect(chat.texts).to_have_text(["one", "two", "three"])
    assert offsets(chat) == [1, 2, 3]
    chat.say("four")
    expect(chat.texts).to_have_text(["one", "two", "three", "four"])


def test_history_lost_on_restart_shows_notice_and_new_messages(
    server: ServerProcess, open_chat: OpenChat
) -> None:
    # The default ``server`` keeps history in memory: a restart starts a new epoch.
    chat = open_chat(server, "alice", "news")
    api_publish(server, "news", "old 1")
    api_publish(server, "news", "old 2")
    expect(chat.texts).to_have_text(["old 1", "old 2"])
    old_epoch = chat.messages.first.get_attribute("data-epoch")

    chat.context.set_offline(True)
    server.restart()
    expect(chat.status).not_to_have_attribute("data-state", "connected")
    api_publish(server, "news", "new 1")
    api_publish(server, "news", "new 2")
    chat.context.set_offline(False)

    expect(chat.status).to_have_attribute("data-state", "connected", timeout=RECONNECT_TIMEOUT_MS)
    notice = chat.page.locator("#messages [data-testid=notice]")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text("lost")
    api_publish(server, "news", "new 3")
    expect(chat.texts).to_have_text(["old 1", "old 2", "new 1", "new 2", "new 3"])
    epochs = chat.messages.evaluate_all("items => items.map(item => item.dataset.epoch)")
    assert epochs[:2] == [old_epoch, old_epoch]
    assert len(set(epochs[2:])) == 1
    assert epochs[2] != old_epoch
    assert offsets(chat) == [1, 2, 1, 2, 3]


def test_reload_resumes_room_and_shows_each_message_once(
    server_factory: ServerFactory, open_chat: OpenChat
) -> None:
    server = server_factory("--api-key", API_KEY)
    chat = open_chat(server, "carol", "den")
    for n in (1, 2, 3):
        api_publish(server, "den", f"m{n}")
    expect(chat.texts).to_have_text(["m1", "m2", "m3"])

    chat.page.reload()
    # The nickname and the room come back from storage: no dialog, straight in.
    expect(chat.page.locator("#nick-dialog")).to_be_hidden()
    expect(chat.page.locator("#me-name")).to_have_text("carol")
    chat.wait_joined("den")
    api_publish(server, "den", "m4")
    expect(chat.texts).to_have_text(["m1", "m2", "m3", "m4"])
    assert offsets(chat) == [1, 2, 3, 4]
    # It resumed from the cursor kept in sessionStorage (then filled in older context).
    assert chat.joins("den")[-1]["since"]["offset"] == 3


def test_rooms_switching_unread_and_hash(server: ServerProcess, open_chat: OpenChat) -> None:
    chat = open_chat(server, "dave", "alpha")
    page = chat.page
    page.locator("#room-input").fill("beta")
    page.locator("#join").click()
    chat.wait_joined("beta")
    expect(page).to_have_url(re.compile(r"#beta$"))
    expect(page.locator("#rooms [data-testid=room-item]")).to_have_count(2)

    api_publish(server, "alpha", "for alpha")
    alpha = page.locator("#rooms [data-room=alpha]")
    expect(alpha.locator("[data-testid=unread]")).to_have_text("1")
    expect(chat.messages).to_have_count(0)  # beta is empty

    alpha.locator(".room-open").click()
    expect(page).to_have_url(re.compile(r"#alpha$"))
    expect(chat.texts).to_have_text(["for alpha"])
    expect(alpha.locator("[data-testid=unread]")).to_be_hidden()

    # A room in the URL hash is joined and opened.
    page.evaluate("location.hash = 'gamma'")
    chat.wait_joined("gamma")
    expect(page.locator("#rooms [data-testid=room-item]")).to_have_count(3)

    # Invalid names are refused with a message.
    page.locator("#room-input").fill("no spaces allowed")
    page.locator("#join").click()
    expect(page.locator("#join-error")).to_be_visible()

    # Leaving a room removes it and opens another one.
    page.locator("#rooms [data-room=gamma] [data-testid=leave]").click()
    expect(page.locator("#rooms [data-testid=room-item]")).to_have_count(2)
    expect(page.locator("#room-title")).not_to_have_text("#gamma")


def test_narrow_screen(server: ServerProcess, open_chat: OpenChat) -> None:
    nick = "erin-on-a-small-phone"
    chat = open_chat(server, nick, "phone", viewport={"width": 375, "height": 740})
    page = chat.page
    expect(page.locator("#me")).to_be_in_viewport(ratio=1)
    expect(page.locator("#status")).to_be_in_viewport(ratio=1)
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    chat.say("small screens work too, even with a long line that has to wrap nicely")
    expect(chat.texts).to_have_count(1)
    expect(page.locator("#message-input")).to_be_in_viewport()
    expect(page.locator("#send")).to_be_in_viewport()
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"horizontal overflow: {width}"

    page.locator("#rooms-toggle").click()
    expect(page.locator("#sidebar")).to_be_in_viewport()
    page.locator("#room-input").fill("second")
    page.locator("#join").click()
    chat.wait_joined("second")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()

    page.locator("#members-toggle").click()
    expect(page.locator("#members-panel")).to_be_in_viewport()
    expect(member_names(chat)).to_have_text([nick])


def test_the_chat_page_and_the_demos_share_the_theme(
    server: ServerProcess, open_chat: OpenChat
) -> None:
    """theme.css (imported by chat.css and demo.css) gives both the same palette."""
    chat = open_chat(server, "alice", "lobby")
    page = chat.page

    def background() -> object:
        return page.evaluate("getComputedStyle(document.body).backgroundColor")

    light = "rgb(245, 246, 248)"  # --bg of theme.css (the browser runs in light mode)
    assert background() == light
    assert page.evaluate("getComputedStyle(document.body).fontSize") == "15px"
    page.goto(server.http_url + "/demo/")
    expect(page.locator("body")).to_have_css("background-color", light)
