//! The machine's PostgreSQL (`XDRSYNC_TEST_POSTGRES`, default `127.0.0.1:5432`, trust auth,
//! database `test`, started by `scripts/services`): a client for reading back what a sink
//! wrote, and a schema of its own per test so parallel tests never meet.

/// The env var naming the server's `host:port`.
pub const TEST_POSTGRES_ENV: &str = "XDRSYNC_TEST_POSTGRES";

/// The server's `host:port`.
pub fn address() -> String {
    std::env::var(TEST_POSTGRES_ENV).unwrap_or_else(|_| "127.0.0.1:5432".into())
}

/// The URL a sink connects with (to `address`, or to a proxy in front of it).
pub fn url(address: &str) -> String {
    format!("postgres://postgres@{address}/test")
}

/// A client of the server; missing PostgreSQL fails the test.
pub async fn client() -> tokio_postgres::Client {
    let a = address();
    let (c, conn) = tokio_postgres::connect(&url(&a), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {a} (scripts/services starts it): {e}"));
    tokio::spawn(conn);
    c
}

/// A schema name no other test uses.
pub fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Every event id in the sink's tables (one per stream) of `schema`.
pub async fn event_ids(schema: &str) -> Vec<String> {
    let c = client().await;
    let mut ids = Vec::new();
    for t in ["incidents", "alerts", "detections", "hunts"] {
        for row in c
            .query(&format!("SELECT event_id FROM {schema}.xdrsync_{t}"), &[])
            .await
            .unwrap()
        {
            ids.push(row.get(0));
        }
    }
    ids
}

/// Drops `schema` and what the test put in it.
pub async fn drop_schema(schema: &str) {
    client()
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// The CA that signed the machine's PostgreSQL server certificate (`scripts/services` makes
/// it: the certificate names `localhost` only); a missing file fails the test.
pub fn tls_ca() -> std::path::PathBuf {
    let dir = std::env::var("XDRSYNC_TEST_POSTGRES_TLS_DIR")
        .unwrap_or_else(|_| "/var/lib/xdrsync-test/postgres-tls".into());
    let ca = std::path::Path::new(&dir).join("ca.pem");
    assert!(
        ca.exists(),
        "{} is missing: scripts/services turns on TLS for the test PostgreSQL",
        ca.display()
    );
    ca
}

/// Whether the server's sessions named `application_name` are all encrypted, and how many
/// there are.
pub async fn sessions_encrypted(application_name: &str) -> (bool, i64) {
    let row = client()
        .await
        .query_one(
            "SELECT coalesce(bool_and(s.ssl), false), count(*)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}
