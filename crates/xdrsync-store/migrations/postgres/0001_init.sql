-- The PostgreSQL store's first schema: the SQLite store's tables as its migrations 0001-0008
-- left them, in PostgreSQL's types. Times are the model's fixed-width text (seven fractional
-- digits, `Z`), as in SQLite, so text order is time order in both. Payloads are BYTEA: a
-- compressed payload starts with the format's magic byte `Z`, and JSON text never does.
CREATE TABLE versions (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    stream       TEXT NOT NULL CHECK (stream IN ('incidents', 'alerts', 'detections', 'hunts')),
    item_id      TEXT NOT NULL,
    last_update  TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    change       TEXT NOT NULL CHECK (change IN ('created', 'updated', 'alert_added', 'redirected')),
    changes      TEXT NOT NULL DEFAULT '{}',
    api          TEXT NOT NULL,
    normalized   BYTEA NOT NULL,
    raw          BYTEA NOT NULL,
    fetched_at   TEXT NOT NULL,
    origin       TEXT,
    UNIQUE (tenant_id, stream, item_id, last_update)
);

CREATE TABLE cursors (
    tenant_id   TEXT NOT NULL,
    stream      TEXT NOT NULL,
    high_water  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, stream)
);

CREATE TABLE sink_positions (
    sink        TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    updated_at  TEXT NOT NULL,
    state       TEXT
);

CREATE TABLE poison (
    tenant_id    TEXT NOT NULL,
    raw_hash     TEXT NOT NULL,
    incident_id  TEXT,
    reason       TEXT NOT NULL,
    raw          TEXT NOT NULL,
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    times_seen   BIGINT NOT NULL,
    stream       TEXT NOT NULL DEFAULT 'incidents',
    PRIMARY KEY (tenant_id, raw_hash)
);

CREATE TABLE stream_health (
    tenant_id     TEXT NOT NULL,
    stream        TEXT NOT NULL,
    tenant_name   TEXT NOT NULL,
    last_attempt  TEXT NOT NULL,
    last_success  TEXT,
    degraded      TEXT,
    failures      BIGINT NOT NULL DEFAULT 0,
    partial       TEXT,
    covered_from  TEXT,
    PRIMARY KEY (tenant_id, stream)
);

CREATE TABLE sink_health (
    sink            TEXT PRIMARY KEY,
    last_delivery   TEXT,
    last_error      TEXT,
    last_error_at   TEXT,
    failures        BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE actions (
    id            TEXT PRIMARY KEY,
    -- Insertion order (SQLite's rowid): actions of the same instant list in the order recorded.
    ord           BIGINT GENERATED ALWAYS AS IDENTITY,
    created_at    TEXT NOT NULL,
    actor         TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    tenant_name   TEXT NOT NULL,
    target        TEXT NOT NULL CHECK (target IN ('incident', 'alert')),
    item_id       TEXT NOT NULL,
    request       TEXT NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('applied', 'skipped', 'failed')),
    answer        TEXT NOT NULL DEFAULT '',
    produced      TEXT
);
CREATE INDEX actions_by_tenant ON actions (tenant_id, created_at);

CREATE TABLE hunt_runs (
    hunt          TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    rows          BIGINT NOT NULL,
    new_rows      BIGINT NOT NULL,
    truncated     BIGINT NOT NULL,
    error         TEXT,
    last_success  TEXT,
    PRIMARY KEY (hunt, tenant_id)
);

CREATE TABLE dictionaries (
    id          INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at  TEXT NOT NULL,
    bytes       BYTEA NOT NULL
);
