//! Results: latency summaries, progress bars, the summary table and JSON.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Latencies are recorded in nanoseconds, 3 significant figures, up to this.
const MAX_LATENCY_NS: u64 = 120_000_000_000;

/// The run's timeline, as the generator's clock sees it.
pub(crate) struct Window {
    pub(crate) start: std::time::Instant,
    /// End of the warmup: counting and CPU readings start here.
    pub(crate) measure_from: std::time::Instant,
    pub(crate) end: std::time::Instant,
}

/// Shows progress (the rate of `counter`, in `unit`/s) until the window
/// ends, and reads CPU use at the edges of the measured part. Returns
/// (generator %, server %) of one core over the measured part.
pub(crate) async fn watch(
    window: &Window,
    json: bool,
    counter: &std::sync::atomic::AtomicU64,
    unit: &str,
    server_pid: Option<u32>,
) -> (Option<f64>, Option<f64>) {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use super::sys::CpuSample;

    let Window { start, measure_from, end } = *window;
    let total = end.duration_since(start);
    let bar = progress(json, total.as_millis() as u64, "{prefix:>9} [{bar:30}] {elapsed:>3} {msg}");
    bar.set_prefix("warmup");
    let mut cpu_from = None;
    let mut last = (Instant::now(), 0u64);
    loop {
        let now = Instant::now();
        if cpu_from.is_none() && now >= measure_from {
            cpu_from = Some(CpuSample::take(server_pid));
            bar.set_prefix("measuring");
        }
        if now >= end {
            break;
        }
        let count = counter.load(Ordering::Relaxed);
        let rate = (count - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, count);
        bar.set_position(now.duration_since(start).as_millis() as u64);
        bar.set_message(format!("{} {unit}/s", thousands(rate)));
        let next = if cpu_from.is_none() { measure_from } else { end };
        tokio::time::sleep_until(next.min(now + Duration::from_millis(250)).into()).await;
    }
    let cpu_to = CpuSample::take(server_pid);
    bar.finish_and_clear();
    cpu_from.map_or((None, None), |from| from.percent_until(&cpu_to))
}

/// Distinct error messages kept per run.
const MAX_ERROR_SAMPLES: usize = 5;

/// A run's errors: how many, and the first few distinct messages.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    pub(crate) count: u64,
    pub(crate) samples: Vec<String>,
}

impl Errors {
    /// Counts an error and keeps its message if it is a new one.
    pub(crate) fn add(&mut self, error: &anyhow::Error) {
        self.count += 1;
        self.keep(format!("{error:#}"));
    }

    /// Adds another part's errors to these.
    pub(crate) fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for sample in other.samples {
            self.keep(sample);
        }
    }

    fn keep(&mut self, sample: String) {
        if self.samples.len() < MAX_ERROR_SAMPLES && !self.samples.contains(&sample) {
            self.samples.push(sample);
        }
    }
}

/// A latency histogram in nanoseconds.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 sig figs"))
}

/// Records `latency`, clamped to the histogram's range.
#[inline]
pub(crate) fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_NS);
    hist.saturating_record(ns);
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) samples: u64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
}

impl Latency {
    pub(crate) fn of(hist: &Histogram<u64>) -> Self {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Self {
            samples: hist.len(),
            p50_us: us(hist.value_at_quantile(0.5)),
            p90_us: us(hist.value_at_quantile(0.9)),
            p99_us: us(hist.value_at_quantile(0.99)),
            p999_us: us(hist.value_at_quantile(0.999)),
            max_us: us(hist.max()),
            mean_us: (hist.mean() / 100.0).round() / 10.0,
        }
    }

    /// `p50 41 µs  p90 …` on one line.
    pub(crate) fn line(&self) -> String {
        if self.samples == 0 {
            return "n/a (nothing was timed)".to_owned();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            micros(self.p50_us),
            micros(self.p90_us),
            micros(self.p99_us),
            micros(self.p999_us),
            micros(self.max_us)
        )
    }
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 { format!("{:.1} ms", us / 1000.0) } else { format!("{us:.0} µs") }
}

/// A number with thousands separators: 1234567.8 → "1,234,568".
pub(crate) fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// CPU figures for the table: "generator 97% of a core, server 88%".
pub(crate) fn cpu_line(generator: Option<f64>, server: Option<f64>) -> String {
    let mut line = match generator {
        Some(g) => format!("generator {g:.0}% of a core"),
        None => "generator n/a".to_owned(),
    };
    if let Some(s) = server {
        let _ = write!(line, ", server {s:.0}%");
    }
    if generator.is_some_and(|g| g >= 90.0) {
        line.push_str("  (the generator is near saturation: the server may be faster than shown)");
    }
    line
}

/// Prints a result (the table followed by its error samples and warnings,
/// or JSON), then fails with `nothing_measured` when that is given: a run
/// that measured nothing exits non-zero, its figures printed all the same.
pub(crate) fn finish<T: Serialize>(
    json: bool,
    result: &T,
    mut table: Vec<(&str, String)>,
    error_samples: &[String],
    warnings: &[String],
    nothing_measured: Option<&str>,
) -> anyhow::Result<()> {
    table.extend(error_samples.iter().map(|sample| ("", sample.clone())));
    table.extend(warnings.iter().map(|warning| ("warning", warning.clone())));
    emit(json, result, &table)?;
    match nothing_measured {
        Some(what) => anyhow::bail!("{what}"),
        None => Ok(()),
    }
}

/// Prints a result: JSON on stdout, or the human table.
pub(crate) fn emit<T: Serialize>(json: bool, result: &T, table: &[(&str, String)]) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        let width = table.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in table {
            println!("  {key:<width$}  {value}");
        }
    }
    Ok(())
}

/// A progress bar on stderr, drawn only on a terminal and without `--json`.
pub(crate) fn progress(json: bool, len: u64, template: &str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(8));
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn errors_keep_a_few_distinct_samples_and_count_all() {
        let mut errors = Errors::default();
        for i in 0..20 {
            errors.add(&anyhow::anyhow!("refused {}", i % 7));
        }
        let mut more = Errors::default();
        more.add(&anyhow::anyhow!("refused 0"));
        errors.merge(more);
        assert_eq!(errors.count, 21);
        assert_eq!(errors.samples, ["refused 0", "refused 1", "refused 2", "refused 3", "refused 4"]);
    }

    #[test]
    fn percentiles_are_ordered() {
        let mut hist = histogram();
        for us in 1..=1000u64 {
            record(&mut hist, Duration::from_micros(us));
        }
        let l = Latency::of(&hist);
        assert!(
            l.p50_us <= l.p90_us && l.p90_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us
        );
        assert!((l.p50_us - 500.0).abs() < 2.0, "{l:?}");
    }
}
