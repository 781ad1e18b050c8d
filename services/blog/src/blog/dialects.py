"""The SQL that differs between the blog's backends, and nothing else: everything not here is portable.

Statements are written once, with ``?`` placeholders (the MariaDB session turns them into ``%s``);
where SQLite and MariaDB spell a thing differently, the statement takes the fragment from its
database's :class:`Dialect`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MARIADB", "SQLITE", "Dialect"]


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    # An article's tags as a JSON array in name order (``a`` is the article in scope); ``[]`` if none.
    tags_json: str
    # A one-column table (``value``) of the strings in one JSON-array parameter.
    json_values: str
    # INSERT that leaves an existing row with the same key alone (a rowcount of 0 then), while a
    # missing referenced row still fails. ``{table}``, ``{columns}``, ``{marks}``, ``{first}``.
    insert_or_ignore_template: str

    def insert_or_ignore(self, table: str, columns: tuple[str, ...]) -> str:
        return self.insert_or_ignore_template.format(
            table=table, columns=", ".join(columns), marks=", ".join("?" * len(columns)), first=columns[0]
        )


SQLITE = Dialect(
    name="sqlite",
    # SQLite 3.40 has no ORDER BY inside aggregates: a subquery keeps the scan order.
    tags_json="(SELECT json_group_array(tag) FROM"
    " (SELECT tag FROM article_tags t WHERE t.article_id = a.id ORDER BY tag))",
    json_values="SELECT value FROM json_each(?)",
    insert_or_ignore_template="INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})",
)

MARIADB = Dialect(
    name="mariadb",
    # JSON_ARRAYAGG of no rows is NULL where SQLite's json_group_array says [].
    tags_json="COALESCE((SELECT JSON_ARRAYAGG(tag ORDER BY tag) FROM article_tags t"
    " WHERE t.article_id = a.id), '[]')",
    json_values="SELECT value FROM JSON_TABLE(?, '$[*]' COLUMNS (value VARCHAR(255) PATH '$')) AS j",
    # INSERT IGNORE would also turn a foreign-key failure into a warning; a no-op update does not.
    insert_or_ignore_template="INSERT INTO {table} ({columns}) VALUES ({marks})"
    " ON DUPLICATE KEY UPDATE {first} = {first}",
)
