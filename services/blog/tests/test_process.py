"""``python -m blog`` and ``python -m blog.warm`` as real processes."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import aiohttp
from blog_testing import REDIS_URL

from asynccore.testing import ServiceProcess, free_port


async def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = ServiceProcess([sys.executable, *argv], env=env, name=argv[-1])
    await proc.start()
    code = await proc.wait(timeout=60)
    return code, proc.output


async def test_serves_warms_and_stops_cleanly(database_url: str, prefix: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "BLOG_PORT": str(port),
        "BLOG_DATABASE_URL": database_url,
        "BLOG_CACHE_PREFIX": prefix,
        "REDIS_URL": REDIS_URL,
        "BLOG_PUBLIC_URL": base,
        "BLOG_ARGON2_TIME_COST": "1",
        "BLOG_ARGON2_MEMORY_KIB": "1024",
    }
    blog = ServiceProcess([sys.executable, "-m", "blog"], env=env, health_url=f"{base}/healthz", name="blog")
    await blog.start(timeout=30)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            user = {"username": "proc", "email": "proc@example.com", "password": "password"}
            async with http.post(f"{base}/api/users", json={"user": user}) as resp:
                token = (await resp.json())["user"]["token"]
            for i in range(3):
                article = {"title": f"Warm {i}", "description": "d", "body": "b", "tagList": ["warm"]}
                async with http.post(
                    f"{base}/api/articles",
                    json={"article": article},
                    headers={"Authorization": f"Token {token}"},
                ) as resp:
                    assert resp.status == 201

        code, output = await run("-m", "blog.warm", "--base-url", base)
        assert code == 0, output
        assert "broken links: 0" in output

        started = time.monotonic()
        blog.kill(signal.SIGTERM)
        assert await blog.wait(timeout=15) == 0
        assert time.monotonic() - started < 5, "shutdown drains promptly"
    finally:
        await blog.stop()


async def test_a_bad_setting_stops_start_up_with_one_line(tmp_path: Path) -> None:
    code, output = await run(
        "-m", "blog", env={"BLOG_PORT": "eighty", "BLOG_DB_PATH": str(tmp_path / "x.db")}
    )
    assert code == 2
    assert output.strip().startswith("config error: BLOG_PORT")
    assert len(output.strip().splitlines()) == 1
