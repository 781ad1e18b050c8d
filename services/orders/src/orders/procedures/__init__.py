"""Stored procedures, each one's current body in ``<name>.sql``; migrations (re)create them from here.

To change a procedure, edit its file and add a migration that re-creates it::

    # migrations/00NN.<why>.py
    from yoyo import step
    from orders.procedures import recreate
    steps = [step(sql) for sql in recreate("place_orders_and_commit")]

A fresh database runs every such migration in turn, each creating the body the file has now, so the
last one leaves the same procedure as on a database that ran them over time. A body must not contain
``%``: yoyo passes each statement through PyMySQL's ``%`` formatting.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PROCEDURES", "body", "recreate"]

PROCEDURES = Path(__file__).parent


def body(name: str) -> str:
    """The ``CREATE PROCEDURE`` statement in ``<name>.sql``."""
    return (PROCEDURES / f"{name}.sql").read_text()


def recreate(*names: str) -> list[str]:
    """The statements that replace each procedure in ``names`` with its file's body, in that order."""
    return [sql for name in names for sql in (f"DROP PROCEDURE IF EXISTS {name}", body(name))]
