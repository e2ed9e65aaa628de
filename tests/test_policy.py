"""Room namespaces from the config file, and how a room finds its rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomcast.config import Settings
from roomcast.exceptions import ConfigError
from roomcast.policy import Namespace, load_namespaces

CONFIG = """
[namespaces."public:*"]
anonymous = true
history_size = 100

[namespaces."feed:*"]
publish = "api"
history_ttl = 60

[namespaces."*:secret"]
presence = false
"""


def test_a_config_file_gives_namespaces_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "roomcast.toml"
    path.write_text(CONFIG)
    namespaces = load_namespaces(path)
    assert [ns.pattern for ns in namespaces] == ["public:*", "feed:*", "*:secret"]
    settings = Settings(namespaces=namespaces, history_size=500, history_ttl=5.0)
    assert settings.namespace("public:lobby") == Namespace(
        "public:*", anonymous=True, history_size=100, history_ttl=5.0
    )
    assert settings.namespace("feed:prices") == Namespace(
        "feed:*", publish="api", history_size=500, history_ttl=60
    )
    # the first match wins: public:secret is public, not quiet
    assert settings.namespace("public:secret").presence is True
    assert settings.namespace("team:secret").presence is False
    assert settings.namespace("other") == Namespace("*", history_size=500, history_ttl=5.0)


def test_readonly_rooms_make_any_namespace_api_only() -> None:
    settings = Settings(namespaces=(Namespace("public:*", anonymous=True),),
                        readonly_rooms=("public:news",))  # fmt: skip
    assert settings.namespace("public:news").publish == "api"
    assert settings.is_readonly("public:news")
    assert not settings.is_readonly("public:chat")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[namespaces."a:*"]\nanonymus = true\n', "anonymus"),
        ('[namespaces."a:*"]\npublish = "everyone"\n', "publish"),
        ('[namespaces."a:*"]\nhistory_size = 0\n', "history_size must be >= 1"),
        ('[namespaces."a:*"]\nhistory_ttl = -1\n', "history_ttl must be >= 0"),
        ("[server]\nport = 1\n", "server"),
        ("namespaces = [", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_refused_with_its_reason(
    tmp_path: Path, text: str, error: str
) -> None:
    path = tmp_path / "roomcast.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error) as info:
        load_namespaces(path)
    assert str(path) in str(info.value)


def test_a_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_namespaces(tmp_path / "absent.toml")
