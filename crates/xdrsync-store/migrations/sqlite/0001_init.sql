-- Incident versions: the outbox. `seq` orders delivery; (tenant, incident, last_update) is the
-- version identity, so re-reading an incident never stores it twice.
CREATE TABLE incident_versions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    incident_id  TEXT NOT NULL,
    last_update  TEXT NOT NULL,
    event_id     TEXT NOT NULL UNIQUE,
    change       TEXT NOT NULL CHECK (change IN ('created', 'updated')),
    api          TEXT NOT NULL,
    normalized   TEXT NOT NULL,
    raw          TEXT NOT NULL,
    fetched_at   TEXT NOT NULL,
    UNIQUE (tenant_id, incident_id, last_update)
);
CREATE INDEX incident_versions_by_incident ON incident_versions (tenant_id, incident_id, seq);

-- High-water mark of each (tenant, stream); it only moves forward.
CREATE TABLE cursors (
    tenant_id   TEXT NOT NULL,
    stream      TEXT NOT NULL,
    high_water  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, stream)
);

-- How far each sink has delivered (the last acknowledged seq).
CREATE TABLE sink_positions (
    sink        TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Items the API returned that could not be read; reported, never silently dropped.
CREATE TABLE poison (
    tenant_id    TEXT NOT NULL,
    raw_hash     TEXT NOT NULL,
    incident_id  TEXT,
    reason       TEXT NOT NULL,
    raw          TEXT NOT NULL,
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    times_seen   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, raw_hash)
);
