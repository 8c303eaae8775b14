-- The cluster's leases: which worker pulls each (tenant, stream), since which generation, and
-- until when (the server's clock: workers' clocks never decide). A commit names its lease's
-- generation and is refused once the lease moved on (fencing).
CREATE TABLE leases (
    tenant_id   TEXT NOT NULL,
    stream      TEXT NOT NULL,
    worker      TEXT,
    generation  BIGINT NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ,
    renewed_at  TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, stream)
);

-- Every worker's last renewal, and until when that renewal keeps it live (its lease length):
-- the live ones share the leases.
CREATE TABLE workers (
    worker       TEXT PRIMARY KEY,
    seen_at      TIMESTAMPTZ NOT NULL,
    alive_until  TIMESTAMPTZ NOT NULL
);
