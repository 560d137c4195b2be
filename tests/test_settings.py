"""RedisSettings: URL parsing, validation, password masking, environment."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from framework.exceptions import ConfigurationError, FrameworkError
from framework.settings import ENV_VAR, RedisSettings, redact_url

SECRET = "s3cr3t-p@ss/word"  # needs percent-encoding in a URL
ENCODED = "s3cr3t-p%40ss%2Fword"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", {"host": "localhost", "port": 6379, "db": 0, "ssl": False}),
        ("redis://h:7000/3", {"host": "h", "port": 7000, "db": 3}),
        ("redis://h:7000/", {"host": "h", "port": 7000, "db": 0}),
        ("redis://h?db=2", {"host": "h", "db": 2}),
        ("redis://[::1]:6380/1", {"host": "::1", "port": 6380, "db": 1}),
        ("REDIS://H:1", {"host": "h", "port": 1}),
        ("redis://alice@h", {"username": "alice", "password": None}),
        ("redis://:pw@h", {"username": None}),
        (
            "redis://h?socket_timeout=2.5&connect_timeout=1&retries=0&max_connections=7&prefix=app",
            {
                "socket_timeout": 2.5,
                "connect_timeout": 1.0,
                "retries": 0,
                "max_connections": 7,
                "prefix": "app",
            },
        ),
        ("rediss://h:6390", {"ssl": True, "port": 6390, "ssl_cert_reqs": "required"}),
        (
            "rediss://h?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
            "&ssl_cert_reqs=optional",
            {
                "ssl": True,
                "ssl_ca_certs": "/ca.pem",
                "ssl_certfile": "/c.pem",
                "ssl_keyfile": "/k.pem",
                "ssl_cert_reqs": "optional",
            },
        ),
        ("unix:///run/redis.sock", {"unix_socket_path": "/run/redis.sock", "db": 0}),
        ("unix:///run/redis.sock?db=4", {"unix_socket_path": "/run/redis.sock", "db": 4}),
        ("unix://:pw@/tmp/r.sock", {"unix_socket_path": "/tmp/r.sock"}),
        (
            "redis+cluster://a:7000,b:7001,[::1]:7002",
            {
                "cluster": True,
                "host": "a",
                "port": 7000,
                "nodes": [("a", 7000), ("b", 7001), ("::1", 7002)],
            },
        ),
        ("redis+cluster://a:7000", {"cluster": True, "host": "a", "nodes": []}),
        ("rediss+cluster://a:1,b:2", {"cluster": True, "ssl": True}),
    ],
)
def test_from_url_parses(url: str, expected: dict[str, object]) -> None:
    settings = RedisSettings.from_url(url)
    for name, value in expected.items():
        assert getattr(settings, name) == value, name


def test_from_url_decodes_credentials() -> None:
    settings = RedisSettings.from_url(f"redis://us%3Aer:{ENCODED}@h:1/0")
    assert settings.username == "us:er"
    assert isinstance(settings.password, SecretStr)
    assert settings.password.get_secret_value() == SECRET


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        f"redis://alice:{ENCODED}@h:7000/2?socket_timeout=2.5&prefix=app",
        "rediss://:pw@h:6379/0?ssl_ca_certs=%2Fca.pem&ssl_cert_reqs=none",
        "unix:///tmp/r.sock?db=3",
        "redis+cluster://a:1,b:2,[::1]:3?retries=5",
        "rediss+cluster://u:pw@a:1",
        "redis://[::1]:6380/0",
    ],
)
def test_url_round_trips(url: str) -> None:
    settings = RedisSettings.from_url(url)
    assert settings.url(reveal=True) == url
    assert RedisSettings.from_url(settings.url(reveal=True)) == settings


def test_constructed_cluster_settings_render_their_startup_node() -> None:
    settings = RedisSettings(cluster=True, host="n1", port=7000)
    assert settings.startup_nodes == [("n1", 7000)]
    assert settings.url() == "redis+cluster://n1:7000"


def test_overrides_win_over_the_url() -> None:
    settings = RedisSettings.from_url("redis://h:1/0?retries=5", retries=0, password="pw")
    assert settings.retries == 0
    assert settings.password is not None
    assert settings.password.get_secret_value() == "pw"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("http://h", "scheme"),
        ("localhost:6379", "scheme"),
        ("redis://h:abc", "port"),
        ("redis://h:0", "port"),
        ("redis://h:70000", "port"),
        ("redis://h/abc", "database number"),
        ("redis://h/-1", "database number"),
        ("redis://h/1?db=2", "both"),
        ("redis://h?db=1&db=2", "more than once"),
        ("redis://h?colour=red", "unknown option"),
        ("redis://h?retries=many", "retries"),
        ("redis://h?socket_timeout=0", "socket_timeout"),
        ("redis://h?max_connections=0", "max_connections"),
        ("redis://h?prefix=a{b}", "prefix"),
        ("redis://h?ssl_ca_certs=/ca.pem", "rediss://"),
        ("rediss://h?ssl_cert_reqs=sometimes", "ssl_cert_reqs"),
        ("redis://a:1,b:2", "redis+cluster"),
        ("redis+cluster://a:1/1", "database 0"),
        ("redis+cluster://a:1,:2", "no host"),
        ("unix://", "socket path"),
        ("unix://host/x.sock", "socket path"),
        ("redis://h/0#top", "fragment"),
        ("redis://h?a=1&&", "malformed"),
    ],
)
def test_bad_urls_raise_configuration_error(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisSettings.from_url(url)
    message = str(info.value)
    assert fragment in message
    assert message.endswith(".")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, FrameworkError)


@pytest.mark.parametrize("password", ["pa/ss", "pa?ss=1", "p#w", "a@b/c?d#e", "%2Fenc"])
def test_unencoded_password_characters_parse(password: str) -> None:
    settings = RedisSettings.from_url(f"redis://user:{password}@h:6380/2?retries=1")
    assert (settings.host, settings.port, settings.db, settings.retries) == ("h", 6380, 2, 1)
    assert settings.password is not None
    expected = "/enc" if password == "%2Fenc" else password
    assert settings.password.get_secret_value() == expected
    assert RedisSettings.from_url(settings.url(reveal=True)) == settings


@pytest.mark.parametrize("rest", ["h:notaport/0", "h/x", "h?colour=red", "h:1,h:2"])
def test_errors_never_quote_an_unencoded_password(rest: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisSettings.from_url(f"redis://user:se/cr?et@{rest}")
    assert "se/cr" not in str(info.value)
    assert "cr?et" not in str(info.value)


def test_non_string_url_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="non-empty string"):
        RedisSettings.from_url(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"port": 0}, "port"),
        ({"db": -1}, "db"),
        ({"retries": -1}, "retries"),
        ({"colour": "red"}, "colour"),
        ({"cluster": True, "unix_socket_path": "/x"}, "unix socket"),
        ({"ssl": True, "unix_socket_path": "/x"}, "TLS"),
        ({"nodes": [("a", 1)]}, "cluster=True"),
        ({"cluster": True, "nodes": [("a", 0)]}, "1..65535"),
        ({"ssl_keyfile": "/k.pem"}, "rediss://"),
    ],
)
def test_invalid_fields_raise_configuration_error(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match="Invalid Redis settings") as info:
        RedisSettings(**fields)
    assert fragment in str(info.value)


def test_settings_are_frozen() -> None:
    settings = RedisSettings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_password_is_masked_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://alice:{ENCODED}@h:7000/0"
    settings = RedisSettings.from_url(url)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("settings %s / %r / %s", settings, settings, settings.url())
    shown = [repr(settings), str(settings), settings.url(), caplog.text, str(settings.model_dump())]
    for text in shown:
        assert SECRET not in text
        assert ENCODED not in text
    assert settings.url() == "redis://alice:***@h:7000/0"
    assert settings.url(reveal=True) == url


def test_invalid_url_messages_hide_the_password() -> None:
    for url in (f"redis://u:{ENCODED}@h:99999", f"redis://u:{ENCODED}@h?colour=1"):
        with pytest.raises(ConfigurationError) as info:
            RedisSettings.from_url(url)
        assert ENCODED not in str(info.value)
        assert "***" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        RedisSettings(password=SECRET, port=-5)
    assert SECRET not in str(info.value)
    assert SECRET not in str(info.value.__cause__)


def test_masked_url_needs_the_real_password() -> None:
    masked = RedisSettings.from_url(f"redis://u:{ENCODED}@h:1/0").url()
    with pytest.raises(ConfigurationError, match="masked password"):
        RedisSettings.from_url(masked)
    settings = RedisSettings.from_url(masked, password=SECRET)
    assert settings.url(reveal=True) == f"redis://u:{ENCODED}@h:1/0"


def test_redact_url() -> None:
    assert redact_url("redis://u:pw@h:1") == "redis://u:***@h:1"
    assert redact_url("redis://:p@w@h") == "redis://:***@h"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    assert redact_url("redis://u@h") == "redis://u@h"


def test_from_env() -> None:
    assert RedisSettings.from_env({}) is None
    assert RedisSettings.from_env({ENV_VAR: "  "}) is None
    settings = RedisSettings.from_env({ENV_VAR: "redis://h:7001/2"})
    assert settings is not None
    assert (settings.host, settings.port, settings.db) == ("h", 7001, 2)


def test_from_env_names_the_variable_and_hides_the_password() -> None:
    with pytest.raises(ConfigurationError, match=ENV_VAR) as info:
        RedisSettings.from_env({ENV_VAR: f"redis://:{ENCODED}@h:nope"})
    assert ENCODED not in str(info.value)


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "redis://envhost:7002")
    settings = RedisSettings.from_env()
    assert settings is not None
    assert settings.host == "envhost"
    monkeypatch.delenv(ENV_VAR)
    assert RedisSettings.from_env() is None


def test_settings_round_trip_through_json() -> None:
    settings = RedisSettings.from_url("redis+cluster://a:1,b:2?prefix=x")
    assert RedisSettings.model_validate_json(settings.model_dump_json()) == settings


@pytest.mark.parametrize("url", ["redis://127.0.0.1:/0", "redis+cluster://a:7000,b:/"])
def test_a_colon_without_a_port_is_refused_not_taken_for_6379(url: str) -> None:
    """What "host:$PORT" becomes when $PORT is empty."""
    with pytest.raises(ConfigurationError, match="has a ':' but no port number after it"):
        RedisSettings.from_url(url)


@pytest.mark.parametrize(
    "url", ["redis://:secret@", "redis://:secret@/0", "redis://:p@ss@", "redis://:p@ss/w0rd?@"]
)
def test_credentials_without_a_host_are_refused_not_sent_to_6379(url: str) -> None:
    """The host forgotten, or taken by a password holding '@': before, 127.0.0.1:6379."""
    with pytest.raises(ConfigurationError, match="credentials but no host") as info:
        RedisSettings.from_url(url)
    assert "secret" not in str(info.value)
    assert "p@ss" not in str(info.value)


def test_an_unknown_override_names_itself_and_the_settings() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown Redis setting\(s\) 'pasword'.*password"):
        RedisSettings.from_url("redis://h/0", pasword="x")


def test_without_a_url_the_hint_names_the_variable_or_a_near_miss() -> None:
    assert RedisSettings.no_url_hint({}) == f"set {ENV_VAR} or pass --url to use your own"
    hint = RedisSettings.no_url_hint({"FRAMEWORK_REDIS_URI": "redis://h/0"})
    assert hint == f"FRAMEWORK_REDIS_URI is not read; did you mean {ENV_VAR}?"


@pytest.mark.parametrize(
    "url",
    [
        "redis:/:Zq8-secret@127.0.0.1:6379/0",
        "redis:Zq8-secret@127.0.0.1:6379/0",
        "redis//u:Zq8-secret@h:6379/0",
        "Zq8-secret@h:6379",
        # Without a scheme, the part before a "/" or ":" of a password was shown as one.
        "Zq8/secret@h:6379",
        "Zq8:secret@h:6379",
        "redis://u:Zq8-secret",
        "redis:/u:Zq8%2Dsecret@h/0?socket_timeout=inf",
        # A password holding "@" with the host forgotten: split at the wrong "@".
        "redis://:Zq8@s/w?rd#1",
        # redis-py's query form, which this parser does not take.
        "redis://127.0.0.1:6379/0?password=Zq8%40s%2Fw%3Frd%231",
        "redis://127.0.0.1:6379/0?foo=1&auth=Zq8-secret",
    ],
)
def test_a_mistyped_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisSettings.from_url(url)
    assert "Zq8" not in str(caught.value), str(caught.value)
    assert "Zq8" not in redact_url(url)


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("socket_timeout=inf", "socket_timeout: Input should be a finite number"),
        ("connect_timeout=nan", "connect_timeout: Input should be a finite number"),
        ("socket_timeout=1e10", "socket_timeout: Input should be less than or equal to 86400"),
    ],
)
def test_timeouts_must_be_finite_and_at_most_a_day(query: str, why: str) -> None:
    # An infinite or huge timeout overflowed deep in the socket layer (OverflowError).
    with pytest.raises(ConfigurationError, match=why):
        RedisSettings.from_url(f"redis://127.0.0.1:6379/0?{query}")
    assert RedisSettings(socket_timeout=86400).socket_timeout == 86400


def test_a_short_password_does_not_garble_the_reason() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisSettings.from_url("redis://:p@ss/w?rd#1")
    assert "percent-encode '#' in a password" in str(caught.value)
    assert "ss/w" not in str(caught.value)


def test_a_cluster_node_list_is_not_taken_for_a_password() -> None:
    """Before, "7100,127.0.0.1:7101,..." was masked in every CLI error naming the nodes."""
    from framework.settings import password_candidates

    assert password_candidates("redis+cluster://127.0.0.1:7100,127.0.0.1:7101,[::1]:7102") == set()
    assert "pw" in password_candidates("redis+cluster://a:7000,b:pw")
