//! Emulator throughput on loopback: access tokens per second and incident pages per second.
//!
//! `cargo run --release -p xdrsync-emulator --example bench [-- SECONDS CONCURRENCY]`
//!
//! Rate limits are off (they would measure the quotas, not the emulator). Each phase runs
//! `CONCURRENCY` client tasks for `SECONDS` seconds over keep-alive connections.

// Test code: a failed unwrap or an index out of range is a failed test, with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xdrsync_emulator::{Behaviour, Directory, Emulator, EmulatorConfig};

async fn phase<F, Fut>(name: &str, secs: u64, concurrency: usize, make: F) -> f64
where
    F: Fn(reqwest::Client) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (done, failed, make) = (done.clone(), failed.clone(), make.clone());
        let http = reqwest::Client::new();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                if make(http.clone()).await {
                    done.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / secs as f64;
    println!(
        "{name:<40} {rate:>10.0}/s  ({n} ok, {} failed, {concurrency} clients, {secs} s)",
        failed.load(Ordering::Relaxed)
    );
    rate
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let concurrency = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    let config = EmulatorConfig {
        directory: Directory::demo(1),
        behaviour: Behaviour {
            rate_limits: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let emu = Emulator::start(config, "127.0.0.1:0".parse().expect("address"))
        .await
        .expect("start");
    let c = emu.contract();
    let (base, tenant, id, secret) = (
        emu.base_url(),
        c.tenants[1].id.clone(),
        c.apps[0].client_id.clone(),
        c.apps[0].secret.clone(),
    );
    let token_url = format!("{base}/{tenant}/oauth2/v2.0/token");
    let form = vec![
        ("grant_type".to_owned(), "client_credentials".to_owned()),
        ("client_id".to_owned(), id),
        ("client_secret".to_owned(), secret),
        (
            "scope".to_owned(),
            "https://graph.microsoft.com/.default".to_owned(),
        ),
    ];
    let token: serde_json::Value = reqwest::Client::new()
        .post(&token_url)
        .form(&form)
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let graph = token["access_token"].as_str().expect("token").to_owned();
    let mut xdr_form = form.clone();
    xdr_form[3].1 = "https://api.security.microsoft.com/.default".to_owned();
    let token: serde_json::Value = reqwest::Client::new()
        .post(&token_url)
        .form(&xdr_form)
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let xdr = token["access_token"].as_str().expect("token").to_owned();
    println!("xdrsync emulator benchmark at {base}");
    {
        let (url, form) = (token_url.clone(), form.clone());
        phase(
            "tokens (client credentials, RS256)",
            secs,
            concurrency,
            move |http| {
                let (url, form) = (url.clone(), form.clone());
                async move {
                    http.post(&url)
                        .form(&form)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
    }
    for (name, path, token) in [
        (
            "Graph incident pages ($top=50, alerts)",
            "/v1.0/security/incidents?$top=50&$expand=alerts",
            graph.clone(),
        ),
        (
            "XDR incident pages ($top=100)",
            "/api/incidents?$top=100",
            xdr.clone(),
        ),
    ] {
        let url = format!("{base}{path}");
        phase(name, secs, concurrency, move |http| {
            let (url, token) = (url.clone(), token.clone());
            async move {
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        })
        .await;
    }
    emu.stop().await;
}
