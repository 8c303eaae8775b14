-- One outbox for every stream: incidents, alerts (Graph alerts_v2 / MDE) and SIEM detections
-- share one `seq` order, so each sink keeps one position for all of them. The identity of a
-- version becomes (tenant, stream, item, last_update); the table is rebuilt because SQLite
-- cannot alter a UNIQUE constraint. Rows keep their seq and event id. The event id is a hash of
-- the identity, so it needs no index of its own (one B-tree less per insert).
CREATE TABLE versions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    stream       TEXT NOT NULL CHECK (stream IN ('incidents', 'alerts', 'detections')),
    item_id      TEXT NOT NULL,
    last_update  TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    change       TEXT NOT NULL CHECK (change IN ('created', 'updated', 'alert_added', 'redirected')),
    changes      TEXT NOT NULL DEFAULT '{}',
    api          TEXT NOT NULL,
    normalized   TEXT NOT NULL,
    raw          TEXT NOT NULL,
    fetched_at   TEXT NOT NULL,
    UNIQUE (tenant_id, stream, item_id, last_update)
);
INSERT INTO versions
    (seq, tenant_id, stream, item_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at)
    SELECT seq, tenant_id, 'incidents', incident_id, last_update, event_id, change, changes, api, normalized, raw, fetched_at
    FROM incident_versions;
-- Keep the sequence where it was (even if the newest rows had been deleted): a sink position
-- must never point past a seq that is handed out again.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'versions', seq FROM sqlite_sequence WHERE name = 'incident_versions'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'versions');
UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT s.seq FROM sqlite_sequence s WHERE s.name = 'incident_versions'), 0))
    WHERE name = 'versions';
DROP TABLE incident_versions;

-- Poison items per stream.
ALTER TABLE poison ADD COLUMN stream TEXT NOT NULL DEFAULT 'incidents';
