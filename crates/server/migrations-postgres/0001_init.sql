-- The PostgreSQL schema: the same tables as SQLite's migrations 0001-0003 together, for servers
-- that share one database. Times are Unix milliseconds. Ids sort by code point (COLLATE "C"), as
-- in SQLite, whatever the database's locale.
CREATE TABLE users (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    password_hash         TEXT,        -- NULL for accounts created by a token ("UserSig" model)
    nickname              TEXT,
    avatar                TEXT,
    created_at            BIGINT NOT NULL,
    removed_at            BIGINT,      -- tombstone: tokens for a removed account stop working
    -- Tokens issued (their `iat`) at or before this are refused, and so are tokens without `iat`;
    -- set when the account is removed, kept if the id is registered again.
    tokens_revoked_before BIGINT
);

CREATE TABLE contacts (
    owner    TEXT COLLATE "C" NOT NULL,
    contact  TEXT COLLATE "C" NOT NULL,
    alias    TEXT,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (owner, contact)
);

-- One row per person per call, written when that person's part ends.
CREATE TABLE call_records (
    "user"       TEXT COLLATE "C" NOT NULL,
    call_id      TEXT COLLATE "C" NOT NULL,
    caller       TEXT NOT NULL,
    invitees     TEXT NOT NULL,        -- JSON array of user ids
    media        TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    connected_at BIGINT,
    ended_at     BIGINT NOT NULL,
    duration_s   BIGINT NOT NULL,
    direction    TEXT NOT NULL,
    result       TEXT NOT NULL,
    end_reason   TEXT,                 -- `hangup` or `failed` for people who connected
    mos_average  DOUBLE PRECISION,     -- how the call sounded to that person, when they said
    mos_worst    DOUBLE PRECISION,
    PRIMARY KEY ("user", call_id)
);

CREATE INDEX call_records_by_user_time ON call_records ("user", started_at DESC);

-- One row per removal, written in the removal's transaction; running servers read the rows past
-- the last they saw and close the removed accounts' sessions.
CREATE TABLE account_events (
    seq  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "user" TEXT NOT NULL,
    kind TEXT NOT NULL,                -- 'removed'
    at   BIGINT NOT NULL
);
