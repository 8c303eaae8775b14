-- Change events: a version is `created`, `updated`, `alert_added` or `redirected`, and records
-- which fields moved (`changes`, JSON). SQLite cannot alter a CHECK, so the table is rebuilt;
-- rows written before this migration keep their kind and get empty `changes`.
CREATE TABLE incident_versions_new (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    incident_id  TEXT NOT NULL,
    last_update  TEXT NOT NULL,
    event_id     TEXT NOT NULL UNIQUE,
    change       TEXT NOT NULL CHECK (change IN ('created', 'updated', 'alert_added', 'redirected')),
    changes      TEXT NOT NULL DEFAULT '{}',
    api          TEXT NOT NULL,
    normalized   TEXT NOT NULL,
    raw          TEXT NOT NULL,
    fetched_at   TEXT NOT NULL,
    UNIQUE (tenant_id, incident_id, last_update)
);
INSERT INTO incident_versions_new
    (seq, tenant_id, incident_id, last_update, event_id, change, api, normalized, raw, fetched_at)
    SELECT seq, tenant_id, incident_id, last_update, event_id, change, api, normalized, raw, fetched_at
    FROM incident_versions;
-- Keep the sequence where it was (rows at its end may have been deleted).
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'incident_versions_new', seq FROM sqlite_sequence WHERE name = 'incident_versions'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'incident_versions_new');
UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT s.seq FROM sqlite_sequence s WHERE s.name = 'incident_versions'), 0))
    WHERE name = 'incident_versions_new';
DROP TABLE incident_versions;
ALTER TABLE incident_versions_new RENAME TO incident_versions;
CREATE INDEX incident_versions_by_incident ON incident_versions (tenant_id, incident_id, seq);

-- The outcome of each tenant's last pull per stream, for `xdrsync status`.
CREATE TABLE stream_health (
    tenant_id     TEXT NOT NULL,
    stream        TEXT NOT NULL,
    tenant_name   TEXT NOT NULL,
    last_attempt  TEXT NOT NULL,
    last_success  TEXT,
    degraded      TEXT,
    failures      INTEGER NOT NULL DEFAULT 0,
    partial       TEXT,
    -- The earliest last-update time a successful pull has read from: the store is complete
    -- from here on (what `reconcile` can hold it to).
    covered_from  TEXT,
    PRIMARY KEY (tenant_id, stream)
);
