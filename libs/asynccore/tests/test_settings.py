"""Config from the environment: a bad value stops a real process with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from asynccore.settings import ServiceSettings, load_settings

# Subclasses the way a service would; each run prints the settings it got, or fails to start.
PROGRAM = textwrap.dedent(
    """
    from pydantic import Field, SecretStr
    from pydantic_settings import SettingsConfigDict
    from asynccore.settings import ServiceSettings, load_settings

    class ShopSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore", frozen=True)
        port: int = 8082
        api_key: SecretStr = Field(default=SecretStr("x" * 20), min_length=20)
        hosts: list[str] = []

    shared = load_settings(ServiceSettings)
    shop = load_settings(ShopSettings)
    print("started", shop.port, shared.request_timeout_s)
    """
)


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    # With a prefix, the subclass reads its own secret (SHOP_JWT_SECRET), required like any other.
    secret = {"SHOP_JWT_SECRET": os.environ["JWT_SECRET"]}
    return subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={**clean, **secret, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_good_environment_starts() -> None:
    done = start({"SHOP_PORT": "9001", "REQUEST_TIMEOUT_S": "2.5"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["started", "9001", "2.5"]


@pytest.mark.parametrize(
    ("env", "variable", "shown"),
    [
        ({"REQUEST_TIMEOUT_S": "soon"}, "REQUEST_TIMEOUT_S", "'soon'"),
        ({"REQUEST_TIMEOUT_S": "-1"}, "REQUEST_TIMEOUT_S", "'-1'"),
        ({"LOG_LEVEL": "CHATTY"}, "LOG_LEVEL", "'CHATTY'"),
        ({"SHOP_PORT": "eighty"}, "SHOP_PORT", "'eighty'"),
        ({"SHOP_HOSTS": "a,b"}, "SHOP_HOSTS", "cannot parse value"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_variable(
    env: dict[str, str], variable: str, shown: str
) -> None:
    done = start(env)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"config error: {variable}: ")
    assert shown in lines[0]


def test_a_bad_secret_is_named_but_never_echoed() -> None:
    done = start({"SHOP_API_KEY": "hunter2-short"})
    assert done.returncode == 2
    assert done.stderr.startswith("config error: SHOP_API_KEY: ")
    assert "hunter2" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_environment_and_overrides_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_JSON", "false")
    monkeypatch.setenv("SHUTDOWN_TIMEOUT_S", "3")
    settings = load_settings(ServiceSettings, request_timeout_s=1.5)
    assert settings.log_json is False
    assert settings.shutdown_timeout_s == 3.0
    assert settings.request_timeout_s == 1.5
    assert settings.jwt_secret.get_secret_value() not in repr(settings)


@pytest.mark.parametrize(
    "value", [None, "", "published-default-secret", "x" * 31, "change-me-to-32-random-bytes-or-more-jwt"]
)
def test_a_missing_or_short_jwt_secret_stops_start_up_naming_it(
    value: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if value is None:
        monkeypatch.delenv("JWT_SECRET", raising=False)
    else:
        monkeypatch.setenv("JWT_SECRET", value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(ServiceSettings)
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("config error: JWT_SECRET:") and "\n" not in line
    assert not value or value not in line  # a secret is never echoed


def test_a_32_byte_jwt_secret_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "é" * 16)  # 32 bytes in UTF-8, 16 characters
    assert load_settings(ServiceSettings).jwt_secret.get_secret_value() == "é" * 16
