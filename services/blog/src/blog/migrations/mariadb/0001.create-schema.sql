-- The RealWorld data model on MariaDB/MySQL: the SQLite schema (migrations/sqlite, 0001-0003) as one
-- step, answering every query the same way:
-- - text compares and sorts by code point, trailing spaces included (utf8mb4_nopad_bin), like
--   SQLite's BINARY; emails ignore case (SQLite's NOCASE), accents still count (uca1400 "as_ci").
-- - timestamps are the app's ISO 8601 text ("2026-01-02T03:04:05.678Z"), stored as is: they read
--   back byte for byte and sort as time does, on both backends.
-- - ids are AUTO_INCREMENT, so "newest first" is ORDER BY id DESC here too; every list query has an
--   index that yields its rows in that order (see the comments).
-- - lengths are the API's limits (blog.inputs) in characters; a username_key may grow under NFKC
--   case folding and carry a "#<id>" suffix, so it gets room for that (768 × 4 bytes: InnoDB's
--   largest index key).

CREATE TABLE users (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username      VARCHAR(64) NOT NULL,
    email         VARCHAR(254) COLLATE utf8mb4_uca1400_nopad_as_ci NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    bio           TEXT,
    image         TEXT,
    created_at    CHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    updated_at    CHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    username_key  VARCHAR(768) NOT NULL,
    token_version INT NOT NULL DEFAULT 0,
    CONSTRAINT users_username UNIQUE (username),
    CONSTRAINT users_email UNIQUE (email),
    CONSTRAINT users_by_username_key UNIQUE (username_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE follows (
    follower_id BIGINT NOT NULL,
    followee_id BIGINT NOT NULL,
    PRIMARY KEY (follower_id, followee_id),  -- the feed: whom does this reader follow
    KEY follows_by_followee (followee_id),   -- ON DELETE CASCADE from users looks follows up by followee
    CONSTRAINT follows_follower FOREIGN KEY (follower_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT follows_followee FOREIGN KEY (followee_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- favorites_count is kept in the same transaction as the favorites row, so lists never count.
CREATE TABLE articles (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    slug            VARCHAR(255) NOT NULL,
    title           VARCHAR(256) NOT NULL,
    description     TEXT NOT NULL,
    body            MEDIUMTEXT NOT NULL,
    author_id       BIGINT NOT NULL,
    favorites_count INT NOT NULL DEFAULT 0,
    created_at      CHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    updated_at      CHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    CONSTRAINT articles_slug UNIQUE (slug),
    -- ?author=, the feed and profile pages: one author's articles, newest first.
    KEY articles_by_author (author_id, id),
    CONSTRAINT articles_author FOREIGN KEY (author_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE article_tags (
    article_id BIGINT NOT NULL,
    tag        VARCHAR(64) NOT NULL,
    PRIMARY KEY (article_id, tag),  -- an article's tagList, in order
    -- ?tag= and tag pages: the articles of one tag, newest first; GET /api/tags scans it.
    KEY article_tags_by_tag (tag, article_id),
    CONSTRAINT article_tags_article FOREIGN KEY (article_id) REFERENCES articles (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE favorites (
    user_id    BIGINT NOT NULL,
    article_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, article_id),  -- ?favorited=: one user's favorites, newest article first
    KEY favorites_by_article (article_id),  -- ON DELETE CASCADE from articles looks favorites up by article
    CONSTRAINT favorites_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT favorites_article FOREIGN KEY (article_id) REFERENCES articles (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE comments (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    article_id BIGINT NOT NULL,
    author_id  BIGINT NOT NULL,
    body       TEXT NOT NULL,
    created_at CHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    updated_at CHAR(24) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    KEY comments_by_article (article_id, id),  -- an article's comments, in order
    KEY comments_by_author (author_id),  -- ON DELETE CASCADE from users looks comments up by author
    CONSTRAINT comments_article FOREIGN KEY (article_id) REFERENCES articles (id) ON DELETE CASCADE,
    CONSTRAINT comments_author FOREIGN KEY (author_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
