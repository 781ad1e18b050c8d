-- The RealWorld data model. Ids are rowids, so "newest first" is ORDER BY id DESC: no sort, no extra
-- index. Every list query has an index that yields its rows in that order (see the comments).

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    bio           TEXT,
    image         TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE follows (
    follower_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    followee_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (follower_id, followee_id)  -- the feed: whom does this reader follow
) WITHOUT ROWID;
-- ON DELETE CASCADE from users looks follows up by followee.
CREATE INDEX follows_by_followee ON follows (followee_id);

-- favorites_count is kept in the same transaction as the favorites row, so lists never count.
CREATE TABLE articles (
    id              INTEGER PRIMARY KEY,
    slug            TEXT NOT NULL UNIQUE,
    title           TEXT NOT NULL,
    description     TEXT NOT NULL,
    body            TEXT NOT NULL,
    author_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    favorites_count INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
-- ?author=, the feed and profile pages: one author's articles, newest first.
CREATE INDEX articles_by_author ON articles (author_id, id);

CREATE TABLE article_tags (
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    PRIMARY KEY (article_id, tag)  -- an article's tagList, in order
) WITHOUT ROWID;
-- ?tag= and tag pages: the articles of one tag, newest first; GET /api/tags scans it.
CREATE INDEX article_tags_by_tag ON article_tags (tag, article_id);

CREATE TABLE favorites (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, article_id)  -- ?favorited=: one user's favorites, newest article first
) WITHOUT ROWID;
-- ON DELETE CASCADE from articles looks favorites up by article.
CREATE INDEX favorites_by_article ON favorites (article_id);

CREATE TABLE comments (
    id         INTEGER PRIMARY KEY,
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    author_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- an article's comments, in order.
CREATE INDEX comments_by_article ON comments (article_id, id);
-- ON DELETE CASCADE from users looks comments up by author.
CREATE INDEX comments_by_author ON comments (author_id);
