-- Accounts, profiles, contacts and call records. Times are Unix milliseconds.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,               -- NULL for accounts created by a token ("UserSig" model)
    nickname      TEXT,
    avatar        TEXT,
    created_at    INTEGER NOT NULL,
    removed_at    INTEGER             -- tombstone: tokens for a removed account stop working
) STRICT;

CREATE TABLE contacts (
    owner    TEXT NOT NULL,
    contact  TEXT NOT NULL,
    alias    TEXT,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (owner, contact)
) STRICT;

-- One row per person per call, written when that person's part ends.
CREATE TABLE call_records (
    user         TEXT NOT NULL,
    call_id      TEXT NOT NULL,
    caller       TEXT NOT NULL,
    invitees     TEXT NOT NULL,       -- JSON array of user ids
    media        TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    connected_at INTEGER,
    ended_at     INTEGER NOT NULL,
    duration_s   INTEGER NOT NULL,
    direction    TEXT NOT NULL,
    result       TEXT NOT NULL,
    PRIMARY KEY (user, call_id)
) STRICT;

CREATE INDEX call_records_by_user_time ON call_records (user, started_at DESC);
