-- Removal must reach a running server, and must not hand the old owner's tokens to a later
-- account of the same id.
-- Tokens issued (their `iat`) at or before this Unix ms are refused, and so are tokens without
-- `iat`; set when the account is removed, kept if the id is registered again.
ALTER TABLE users ADD COLUMN tokens_revoked_before INTEGER;

-- One row per removal, written in the removal's transaction; a running server reads the rows
-- past the last it saw and closes the removed accounts' sessions.
CREATE TABLE account_events (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    kind TEXT NOT NULL,               -- 'removed'
    at   INTEGER NOT NULL
) STRICT;

-- Accounts removed before this migration: their old tokens (none carry `iat`) must not pass to a
-- later account of the same id either.
UPDATE users SET tokens_revoked_before = removed_at WHERE removed_at IS NOT NULL;

-- Avatars are printable ASCII of at most 16 KiB from now on (a URL or data URI), so that no
-- profile grows when escaped into JSON; stored ones that are not are dropped.
UPDATE users SET avatar = NULL
WHERE avatar GLOB '*[^!-~]*' OR instr(avatar, '"') > 0 OR instr(avatar, '\') > 0 OR length(avatar) > 16384;
