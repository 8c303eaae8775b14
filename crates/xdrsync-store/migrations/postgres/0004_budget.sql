-- The rate-budget ledger of a cluster (the SQLite store keeps it in a file beside the store):
-- every API call each worker counts, and any 429 pause, per (app, tenant, quota), so a tenant's
-- budget follows its lease to another worker and every worker paces inside one quota. Unlogged:
-- written on every API call, and a lost ledger only forgets calls older than a quota window.
CREATE UNLOGGED TABLE budget_calls (
    id       BIGSERIAL PRIMARY KEY,
    key      TEXT NOT NULL,
    process  TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX budget_calls_by_key ON budget_calls (key, at);

CREATE UNLOGGED TABLE budget_pauses (
    key    TEXT PRIMARY KEY,
    until  BIGINT NOT NULL
);

-- Token buckets shared by every worker: Graph's limit per app across all tenants.
CREATE UNLOGGED TABLE rate_buckets (
    key           TEXT PRIMARY KEY,
    tokens        DOUBLE PRECISION NOT NULL,
    refreshed_at  TIMESTAMPTZ NOT NULL
);
