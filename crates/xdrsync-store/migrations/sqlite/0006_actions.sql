-- Write-back: every action sent to Defender (who, when, what, Microsoft's answer, the version
-- it produced), and the origin of a stored version (`xdrsync:<action id>` when a write of
-- ours produced it; NULL when it was pulled), so sinks can tell a mirrored change from an echo.
CREATE TABLE actions (
    id            TEXT PRIMARY KEY,
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
ALTER TABLE versions ADD COLUMN origin TEXT;
