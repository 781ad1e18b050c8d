"""The blog's configuration, from the environment (``BLOG_*``, ``REDIS_URL``, ``JWT_SECRET`` …)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from asynccore.settings import UserServiceSettings

__all__ = ["BlogSettings"]


class BlogSettings(UserServiceSettings):
    blog_port: int = Field(default=8081, ge=1, le=65535)
    # sqlite:///path (a file: replicas on one host) or mysql://user:pass@host/db (MariaDB/MySQL:
    # replicas anywhere). Unset: the SQLite file at blog_db_path (what older set-ups configured).
    blog_database_url: str = Field(default="", pattern=r"^(sqlite:///.+|mysql://.+)?$")
    blog_db_path: Path = Path("/tmp/asyncstack/blog.db")
    # Reader connections (SQLite); on MariaDB the pool holds this many plus one for the writer.
    blog_db_readers: int = Field(default=4, ge=1, le=64)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every Redis key the blog writes starts with this, so tests (and two blogs on one Redis) never meet.
    blog_cache_prefix: str = Field(default="blog", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # Off: every read goes to SQLite (the benchmark's "uncached" path). Writes still bump versions.
    blog_cache_enabled: bool = True
    blog_cache_ttl_s: float = Field(default=300.0, gt=0)
    # Each entry lives ttl·(1 ± jitter), so keys filled together do not all expire together.
    blog_cache_ttl_jitter: float = Field(default=0.1, ge=0, lt=1)
    # How long a replica may hold the fill lock of a key before another replica loads it itself.
    blog_cache_lock_ms: int = Field(default=2000, ge=10)
    # The in-process tier: ready-to-send bytes of the hottest keys, bounded in bytes.
    blog_cache_local_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # Redis failures in a row before the cache stops trying Redis for ``blog_cache_breaker_reset_s``.
    blog_cache_breaker_failures: int = Field(default=3, ge=1)
    blog_cache_breaker_reset_s: float = Field(default=2.0, gt=0)
    # Absolute links (sitemap, Atom feed) start with this: the address readers reach the site at.
    blog_public_url: str = Field(default="http://127.0.0.1:8080", pattern=r"^https?://[^/]+(/.*)?$")
    blog_page_max_age_s: int = Field(default=30, ge=0)
    blog_page_size: int = Field(default=20, ge=1, le=100)
    # Argon2id cost (RFC 9106 "second recommended" profile by default); tests lower it.
    blog_argon2_time_cost: int = Field(default=3, ge=1)
    blog_argon2_memory_kib: int = Field(default=64 * 1024, ge=8)
    blog_argon2_parallelism: int = Field(default=4, ge=1)
    # Benchmarks only: hash on the event loop, to measure what blocking the loop costs other requests.
    blog_hash_on_loop: bool = False
    # Password hashing is CPU-bound: at most this many at once, a bounded queue behind them.
    blog_hash_concurrency: int = Field(default=2, ge=1)
    blog_hash_queue: int = Field(default=64, ge=0)

    @property
    def database_url(self) -> str:
        """``blog_database_url``, or the SQLite file at ``blog_db_path`` when that is unset."""
        return self.blog_database_url or f"sqlite:///{self.blog_db_path}"
