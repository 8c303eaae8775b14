//! Progress of `pull`, `backfill` and `run` passes on standard error.
//!
//! On a terminal: one bar per running (tenant, stream) with its pages, items, the share of
//! its time window already read (pages come newest first, so the oldest last-update time read
//! so far says how far back the pull has got) and an estimate of the time left from the pace
//! so far (which is the rate budget's pace when the budget is what limits it); below them a
//! bar of the streams done. Not on a terminal (logs, CI, systemd): a line per finished stream,
//! and every 10 s a line per stream still running, so a six-minute backfill is never silent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use xdrsync_model::StreamKind;
use xdrsync_pipeline::{Progress, ProgressHook, Stage, TenantReport};

/// How often a running stream gets a line when standard error is not a terminal (10 s;
/// `XDRSYNC_PROGRESS_SECS` changes it, e.g. for a quieter journal).
fn line_every() -> Duration {
    std::env::var("XDRSYNC_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(Duration::from_secs(10), Duration::from_secs)
}

/// The progress output of one pass.
pub(crate) struct View {
    inner: Arc<Mutex<Inner>>,
    live: bool,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    multi: Option<MultiProgress>,
    bars: BTreeMap<(String, StreamKind), ProgressBar>,
    running: BTreeMap<(String, StreamKind), Progress>,
    total: Option<ProgressBar>,
    done: usize,
    failed: usize,
    streams: usize,
}

impl View {
    /// Progress for a pass of `streams` (tenant, stream) pulls; `live` draws bars (a
    /// terminal), otherwise lines.
    pub(crate) fn new(streams: usize, live: bool) -> View {
        let (multi, total) = if live {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(streams as u64));
            total.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} streams {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("#>-"),
            );
            (Some(multi), Some(total))
        } else {
            (None, None)
        };
        let inner = Arc::new(Mutex::new(Inner {
            multi,
            bars: BTreeMap::new(),
            running: BTreeMap::new(),
            total,
            done: 0,
            failed: 0,
            streams,
        }));
        let ticker = (!live).then(|| {
            let inner = inner.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(line_every());
                every.tick().await;
                loop {
                    every.tick().await;
                    let lines: Vec<String> = lock(&inner).running.values().map(line).collect();
                    for l in lines {
                        eprintln!("{l}");
                    }
                }
            })
        });
        View {
            inner,
            live,
            ticker,
        }
    }

    /// The hook the pipeline calls for every page.
    pub(crate) fn hook(&self) -> ProgressHook {
        let inner = self.inner.clone();
        let live = self.live;
        ProgressHook::new(move |p: &Progress| {
            let mut g = lock(&inner);
            let key = (p.tenant.clone(), p.stream);
            match p.stage {
                Stage::Started | Stage::Page => {
                    g.running.insert(key.clone(), p.clone());
                    if live {
                        let bar = match g.bars.get(&key) {
                            Some(b) => b.clone(),
                            None => {
                                let b = ProgressBar::new(1000);
                                b.set_style(
                                    ProgressStyle::with_template("{prefix:.bold} [{bar:24}] {msg}")
                                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                                        .progress_chars("=> "),
                                );
                                b.set_prefix(format!("{} {}", p.tenant, p.stream));
                                let b = match (&g.multi, &g.total) {
                                    (Some(m), Some(t)) => m.insert_before(t, b),
                                    _ => b,
                                };
                                g.bars.insert(key.clone(), b.clone());
                                b
                            }
                        };
                        bar.set_position((p.fraction().unwrap_or(0.0) * 1000.0).round() as u64);
                        bar.set_message(detail(p));
                    }
                }
                Stage::Finished => {
                    g.running.remove(&key);
                    if let Some(b) = g.bars.remove(&key) {
                        b.finish_and_clear();
                    }
                }
            }
        })
    }

    /// A (tenant, stream) finished with `r`.
    pub(crate) fn finished(&self, r: &TenantReport) {
        let mut g = lock(&self.inner);
        g.done += 1;
        if r.error.is_some() {
            g.failed += 1;
        }
        let what = match &r.error {
            Some(e) => format!("FAILED: {}", crate::text::short_error(e)),
            None => format!(
                "{} new, {} updated, {}",
                r.stats.created,
                r.stats.updated,
                crate::text::plural(u64::from(r.pages), "page")
            ),
        };
        if let Some(t) = &g.total {
            t.set_position(g.done as u64);
            t.set_message(format!("({} failed)", g.failed));
            if let Some(m) = &g.multi {
                let _ = m.println(format!("{} {}: {what}", r.name, r.stream));
            }
        } else {
            eprintln!(
                "pulled {} {} ({}/{}): {what}",
                r.name, r.stream, g.done, g.streams
            );
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        let g = lock(&self.inner);
        for b in g.bars.values() {
            b.finish_and_clear();
        }
        if let Some(t) = &g.total {
            t.finish_and_clear();
        }
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `12 pages, 5000 items, 43% of the window, about 20s left`.
fn detail(p: &Progress) -> String {
    let mut s = format!(
        "{}, {}",
        crate::text::plural(u64::from(p.pages), "page"),
        crate::text::plural(p.items, "item")
    );
    if let Some(f) = p.fraction() {
        s.push_str(&format!(", {:.0}% of the window", f * 100.0));
        let elapsed = crate::text::age_secs(p.started).max(0) as f64;
        if f > 0.0 && f < 1.0 && elapsed >= 1.0 {
            let left = (elapsed * (1.0 - f) / f).round() as i64;
            s.push_str(&format!(", about {} left", crate::text::duration(left)));
        }
    }
    s
}

/// The line printed for a running stream when standard error is not a terminal.
fn line(p: &Progress) -> String {
    format!(
        "pulling {} {} since {}: {} (running {})",
        p.tenant,
        p.stream,
        crate::text::time(p.since),
        detail(p),
        crate::text::duration(crate::text::age_secs(p.started))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdrsync_model::Timestamp;

    #[test]
    fn detail_estimates_the_time_left_from_the_window_read() {
        let now = Timestamp::now();
        let p = Progress {
            tenant: "contoso".into(),
            stream: StreamKind::Incidents,
            stage: Stage::Page,
            pages: 3,
            items: 1500,
            since: now.sub(chrono::Duration::hours(100)),
            started: now.sub(chrono::Duration::seconds(10)),
            oldest: Some(now.sub(chrono::Duration::hours(25))),
        };
        let d = detail(&p);
        assert!(
            d.starts_with("3 pages, 1500 items, 25% of the window, about "),
            "{d}"
        );
        assert!(d.contains("30s left"), "{d}");
        assert!(line(&p).starts_with("pulling contoso incidents since "));
    }
}
