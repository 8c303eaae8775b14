-- Compression dictionaries for the versions' payloads (see `payload.rs`): trained once from
-- the store's own first payloads, never changed or deleted (every payload compressed with
-- one names it by id and needs it to be read).
CREATE TABLE dictionaries (
    id          INTEGER PRIMARY KEY,
    created_at  TEXT NOT NULL,
    bytes       BLOB NOT NULL
);
