"""``uv run stream`` / ``python -m stream``: the API on ``STREAM_PORT`` and a consumer-group member."""

from __future__ import annotations

from asynccore.app import run
from asynccore.settings import load_settings
from stream.service import build_app
from stream.settings import StreamSettings


def main() -> None:
    settings = load_settings(StreamSettings)
    run(build_app(settings), settings.stream_port)


if __name__ == "__main__":
    main()
