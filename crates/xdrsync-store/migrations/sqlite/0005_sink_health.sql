-- How each sink's deliveries went, for `status`, `/metrics` and `/readyz`: the last delivery
-- that moved data, the last error and when. One row per sink name; a sink that never ran
-- has none (and is reported as "never delivered").
CREATE TABLE sink_health (
    sink            TEXT PRIMARY KEY,
    last_delivery   TEXT,
    last_error      TEXT,
    last_error_at   TEXT,
    failures        INTEGER NOT NULL DEFAULT 0
);
