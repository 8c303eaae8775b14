-- Scheduled hunts: their rows are a fourth stream of the one outbox (`hunts`, one version per
-- row, identified by a hash of the row), and each (hunt, tenant)'s last run is kept so `run`
-- knows when it is due and `status` can show it. SQLite cannot alter a CHECK, so `versions` is
-- rebuilt; every row keeps its seq, event id and origin, and the sequence stays where it was.
CREATE TABLE versions_new (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    stream       TEXT NOT NULL CHECK (stream IN ('incidents', 'alerts', 'detections', 'hunts')),
    item_id      TEXT NOT NULL,
    last_update  TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    change       TEXT NOT NULL CHECK (change IN ('created', 'updated', 'alert_added', 'redirected')),
    changes      TEXT NOT NULL DEFAULT '{}',
    api          TEXT NOT NULL,
    normalized   TEXT NOT NULL,
    raw          TEXT NOT NULL,
    fetched_at   TEXT NOT NULL,
    origin       TEXT,
    UNIQUE (tenant_id, stream, item_id, last_update)
);
INSERT INTO versions_new
    (seq, tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at, origin)
    SELECT seq, tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at, origin
    FROM versions;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'versions_new', seq FROM sqlite_sequence WHERE name = 'versions'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'versions_new');
UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT s.seq FROM sqlite_sequence s WHERE s.name = 'versions'), 0))
    WHERE name = 'versions_new';
DROP TABLE versions;
ALTER TABLE versions_new RENAME TO versions;

CREATE TABLE hunt_runs (
    hunt          TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    rows          INTEGER NOT NULL,
    new_rows      INTEGER NOT NULL,
    truncated     INTEGER NOT NULL,
    error         TEXT,
    last_success  TEXT,
    PRIMARY KEY (hunt, tenant_id)
);
