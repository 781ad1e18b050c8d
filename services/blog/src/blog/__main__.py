"""``uv run blog`` / ``python -m blog``: serve the blog on ``BLOG_PORT``."""

from __future__ import annotations

from asynccore.app import run
from asynccore.settings import load_settings
from blog.app import build_app
from blog.settings import BlogSettings


def main() -> None:
    settings = load_settings(BlogSettings)
    run(build_app(settings), settings.blog_port)


if __name__ == "__main__":
    main()
