"""The stream app's typed keys, all in one place: what ``build_app`` and its resources put on the app."""

from __future__ import annotations

from aiohttp import web
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from asynccore.web import settings_key
from stream.consumer import Consumer
from stream.keys import Keys
from stream.live import LiveFeed, LiveLimits
from stream.settings import StreamSettings

__all__ = ["CONSUMER", "KEYS", "LIVE", "LIVE_LIMITS", "PRODUCER", "REDIS", "SETTINGS"]

SETTINGS = settings_key(StreamSettings)  # the StreamSettings create_app was given, typed
REDIS = web.AppKey("redis", Redis)
KEYS = web.AppKey("keys", Keys)
LIVE = web.AppKey("live", LiveFeed)
LIVE_LIMITS = web.AppKey("live_limits", LiveLimits)
PRODUCER = web.AppKey("kafka_producer", AIOKafkaProducer)
CONSUMER = web.AppKey("consumer", Consumer)
