"""The blog's app resources: typed keys and their ``cleanup_ctx`` generators, in dependency order."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from asynccore.app import CleanupCtx
from asynccore.pools.redis import redis_pool
from asynccore.resilience import CircuitBreaker
from asynccore.revocation import token_revocations
from asynccore.web import settings_key
from blog.cache import Cache
from blog.db import Database
from blog.pages import Site, templates
from blog.passwords import Passwords
from blog.settings import BlogSettings
from blog.storage import database_resources

__all__ = ["CACHE", "DB", "PASSWORDS", "REDIS", "SETTINGS", "SITE", "resources"]

SETTINGS = settings_key(BlogSettings)  # the BlogSettings create_app was given, typed
DB = web.AppKey("blog_db", Database)
REDIS = web.AppKey("blog_redis", Redis)
CACHE = web.AppKey("blog_cache", Cache)
PASSWORDS = web.AppKey("blog_passwords", Passwords)
SITE = web.AppKey("blog_site", Site)


def _cache(settings: BlogSettings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        breaker = CircuitBreaker(
            f"blog-cache-{settings.blog_cache_prefix}",
            failure_threshold=settings.blog_cache_breaker_failures,
            reset_after_s=settings.blog_cache_breaker_reset_s,
        )
        cache = Cache(
            app[REDIS],
            settings.redis_url,
            prefix=settings.blog_cache_prefix,
            ttl_s=settings.blog_cache_ttl_s,
            ttl_jitter=settings.blog_cache_ttl_jitter,
            lock_ms=settings.blog_cache_lock_ms,
            local_max_bytes=settings.blog_cache_local_max_bytes,
            enabled=settings.blog_cache_enabled,
            breaker=breaker,
        )
        cache.start()
        app[CACHE] = cache
        app[SITE] = Site(cache, app[DB], templates(settings.blog_public_url), settings.blog_page_size)
        yield
        await cache.close()

    return ctx


def _passwords(settings: BlogSettings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[PASSWORDS] = Passwords(
            time_cost=settings.blog_argon2_time_cost,
            memory_kib=settings.blog_argon2_memory_kib,
            parallelism=settings.blog_argon2_parallelism,
            concurrency=settings.blog_hash_concurrency,
            max_waiting=settings.blog_hash_queue,
            on_loop=settings.blog_hash_on_loop,
        )
        yield

    return ctx


def resources(settings: BlogSettings) -> list[CleanupCtx]:
    """Opened top to bottom, closed bottom to top."""
    return [
        *database_resources(DB, settings.database_url, readers=settings.blog_db_readers),
        redis_pool(REDIS, settings.redis_url),
        _cache(settings),
        _passwords(settings),
        token_revocations(settings),  # a password change publishes here for orders and stream
    ]
