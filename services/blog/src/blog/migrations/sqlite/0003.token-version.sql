-- Which of a user's sign-in tokens still count: tokens carry the version they were issued at
-- (claim "ver"), and a password change increments it, so every older token is refused.
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
