"""``uv run stream`` / ``python -m stream``: the API on ``STREAM_PORT`` and a consumer-group member."""

from __future__ import annotations

import sys

from asynccore.app import run
from asynccore.settings import load_settings
from stream.service import build_app
from stream.settings import StreamSettings


def main() -> None:
    settings = load_settings(StreamSettings)
    try:
        app = build_app(settings)
    except RuntimeError as exc:  # no KAFKA_BOOTSTRAP and no local broker: a configuration problem
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    run(app, settings.stream_port)


if __name__ == "__main__":
    main()
