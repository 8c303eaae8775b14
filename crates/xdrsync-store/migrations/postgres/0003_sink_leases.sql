-- Each sink's delivery lease: exactly one worker of a cluster delivers a sink at a time, and
-- its position moves only under the generation it holds (a paused worker cannot move it).
CREATE TABLE sink_leases (
    sink        TEXT PRIMARY KEY,
    worker      TEXT,
    generation  BIGINT NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ,
    renewed_at  TIMESTAMPTZ
);
