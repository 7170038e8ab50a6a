//! Resident memory of every replica and the database's size, sampled through the run, and the
//! straight-line fits that say whether memory still grows after warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::stand::Stand;
use sea_orm::{ConnectionTrait, Database, Statement};
use tokio::sync::Mutex;

/// One memory sample.
#[derive(Clone, Copy, Debug)]
pub struct Rss {
    /// Replica index.
    pub replica: usize,
    /// Its process (a restart is a new one).
    pub pid: u32,
    /// Seconds since the start.
    pub at: f64,
    /// Resident set, MiB.
    pub mib: f64,
}

/// Everything sampled.
#[derive(Default)]
pub struct Samples {
    /// Memory.
    pub rss: Vec<Rss>,
    /// (seconds since the start, database bytes).
    pub db: Vec<(f64, u64)>,
}

impl Samples {
    /// Every sample as CSV: `what,replica,pid,seconds,value` (`rss` in MiB, `db` in bytes).
    pub fn csv(&self) -> String {
        let mut out = String::from("what,replica,pid,seconds,value\n");
        for r in &self.rss {
            out.push_str(&format!("rss,{},{},{:.1},{:.2}\n", r.replica, r.pid, r.at, r.mib));
        }
        for (at, bytes) in &self.db {
            out.push_str(&format!("db,,,{at:.1},{bytes}\n"));
        }
        out
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The database's size: PostgreSQL's `pg_database_size`, or the SQLite file with its WAL.
async fn db_bytes(url: &str) -> Option<u64> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next()?;
        let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        return Some(size(path.to_string()) + size(format!("{path}-wal")));
    }
    let db = Database::connect(url).await.ok()?;
    let sql = "SELECT CAST(pg_database_size(current_database()) AS BIGINT)";
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.ok()??;
    let _ = db.close().await;
    row.try_get_by_index::<i64>(0).ok().map(|b| b as u64)
}

/// Samples memory every 5 s and the database every 30 s until `until`.
pub async fn run(stand: Arc<Mutex<Stand>>, samples: Arc<std::sync::Mutex<Samples>>, start: Instant, until: Instant) {
    let url = stand.lock().await.db.url.clone();
    let mut tick = 0u64;
    while Instant::now() < until {
        let pids: Vec<Option<u32>> =
            stand.lock().await.services.iter().map(|s| s.child.as_ref().and_then(|c| c.id())).collect();
        let at = start.elapsed().as_secs_f64();
        let mut got: Vec<Rss> = Vec::new();
        for (replica, pid) in pids.into_iter().enumerate() {
            if let Some(pid) = pid
                && let Some(mib) = rss_mib(pid)
            {
                got.push(Rss { replica, pid, at, mib });
            }
        }
        let db = if tick.is_multiple_of(6) { db_bytes(&url).await } else { None };
        {
            let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
            s.rss.extend(got);
            s.db.extend(db.map(|b| (at, b)));
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Least-squares slope of `y` over `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The samples of one replica's longest-lived process after its warm-up (the first quarter of
/// its life, at least two minutes).
fn settled(samples: &[Rss], replica: usize) -> Vec<&Rss> {
    let mine: Vec<&Rss> = samples.iter().filter(|s| s.replica == replica).collect();
    // Each process's first and last sample, in the order processes appeared.
    let mut lives: Vec<(u32, f64, f64)> = Vec::new();
    for s in &mine {
        match lives.iter_mut().find(|l| l.0 == s.pid) {
            Some(l) => l.2 = s.at,
            None => lives.push((s.pid, s.at, s.at)),
        }
    }
    let Some(&(pid, born, end)) = lives.iter().max_by(|a, b| (a.2 - a.1).total_cmp(&(b.2 - b.1))) else {
        return Vec::new();
    };
    let span = end - born;
    let warm = born + (span / 4.0).max(120.0_f64.min(span / 2.0));
    mine.into_iter().filter(|s| s.pid == pid && s.at >= warm).collect()
}

/// Memory of one replica's longest-lived process after its warm-up.
#[derive(Clone, Copy, Debug)]
pub struct Trend {
    /// First sample, MiB.
    pub first: f64,
    /// Last sample, MiB.
    pub last: f64,
    /// Theil–Sen slope, MiB per hour: the one judged.
    pub per_hour: f64,
    /// Least-squares slope, MiB per hour: reported beside it.
    pub least_squares: f64,
    /// Span, hours.
    pub hours: f64,
}

/// Theil–Sen slope of `y` over `x`: the median of the slopes between every two points. A steady
/// climb gives its gradient; a single step followed by a plateau gives about zero, where least
/// squares would spread the step over the whole span.
pub fn median_slope(points: &[(f64, f64)]) -> f64 {
    let mut slopes: Vec<f64> = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    let mid = slopes.len() / 2;
    if slopes.len() % 2 == 1 { slopes[mid] } else { (slopes[mid - 1] + slopes[mid]) / 2.0 }
}

/// The memory trend of one replica's longest-lived process after its warm-up.
pub fn memory_trend(samples: &[Rss], replica: usize) -> Option<Trend> {
    let points: Vec<(f64, f64)> = settled(samples, replica).iter().map(|s| (s.at / 3600.0, s.mib)).collect();
    let (first, last) = (points.first()?.1, points.last()?.1);
    Some(Trend {
        first,
        last,
        per_hour: median_slope(&points),
        least_squares: slope(&points),
        hours: points.last()?.0 - points.first()?.0,
    })
}

/// The highest resident memory of one replica's longest-lived process after its warm-up, MiB.
pub fn memory_peak(samples: &[Rss], replica: usize) -> Option<f64> {
    settled(samples, replica).iter().map(|s| s.mib).reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_its_gradient() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 3.0 + 2.0 * f64::from(i))).collect();
        assert!((slope(&line) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
    }

    #[test]
    fn the_trend_skips_warm_up_and_uses_the_longest_process() {
        let mut s = Vec::new();
        // A short-lived process, growing fast; then a long one, flat after a fast warm-up.
        for i in 0..10 {
            s.push(Rss { replica: 1, pid: 7, at: f64::from(i) * 5.0, mib: 50.0 + f64::from(i) * 10.0 });
        }
        for i in 0..720 {
            let mib = if i < 60 { 50.0 + f64::from(i) } else { 110.0 };
            s.push(Rss { replica: 1, pid: 8, at: 100.0 + f64::from(i) * 5.0, mib });
        }
        let t = memory_trend(&s, 1).unwrap();
        assert_eq!((t.first, t.last), (110.0, 110.0));
        assert!(t.per_hour.abs() < 1e-9 && t.least_squares.abs() < 1e-9 && t.hours > 0.7, "{t:?}");
        assert_eq!(memory_peak(&s, 1), Some(110.0));
        assert_eq!(memory_peak(&s, 2), None);
    }

    #[test]
    fn a_step_then_a_plateau_is_not_growth_but_a_steady_climb_is() {
        // 45 minutes sampled every 5 s: +17 MiB in the first 10 minutes, then flat with jitter.
        let at = |i: u32| f64::from(i) * 5.0 / 3600.0;
        let jitter = |i: u32| f64::from(i % 7) * 0.1 - 0.3;
        let step: Vec<(f64, f64)> = (0..540)
            .map(|i| (at(i), if i < 120 { 60.0 + f64::from(i) * 17.0 / 120.0 } else { 77.0 } + jitter(i)))
            .collect();
        assert!(slope(&step) > 12.0, "least squares counts the step as growth: {}", slope(&step));
        assert!(median_slope(&step).abs() < 2.0, "{}", median_slope(&step));
        // A leak of 20 MiB/h under the same jitter is measured as 20 either way.
        let leak: Vec<(f64, f64)> = (0..540).map(|i| (at(i), 60.0 + 20.0 * at(i) + jitter(i))).collect();
        assert!((median_slope(&leak) - 20.0).abs() < 1.0, "{}", median_slope(&leak));
        assert!((slope(&leak) - 20.0).abs() < 1.0, "{}", slope(&leak));
        // A climb that keeps on in steps (a buffer kept per burst) is growth too.
        let stairs: Vec<(f64, f64)> = (0..540).map(|i| (at(i), 60.0 + f64::from(i / 60) * 2.0)).collect();
        assert!(median_slope(&stairs) > 16.0, "{}", median_slope(&stairs));
        assert_eq!(median_slope(&[(1.0, 5.0)]), 0.0);
    }
}
