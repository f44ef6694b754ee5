//! The Prometheus text exposition format (version 0.0.4), written by hand: the daemon and the
//! projection expose a few dozen series, which does not call for a metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One scrape's text: families (`# HELP`, `# TYPE`) each followed by their samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Exposition {
            out: String::with_capacity(8192),
        }
    }

    /// Starts a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram's samples (`_bucket` cumulative up to `+Inf`, `_sum`, `_count`) under
    /// `labels`; the family was started with [`Kind::Histogram`].
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let mut cumulative = 0;
        for (i, count) in h.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = h.bounds.get(i).map_or("+Inf".to_owned(), |b| number(*b));
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(h.sum_seconds()));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {cumulative}");
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (name, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{name}=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.is_nan() {
        "NaN".to_owned()
    } else {
        value.to_string()
    }
}

/// Bucket bounds for a commit: milliseconds when the brokers are near, seconds when a
/// coordinator moves or a broker is away.
pub const COMMIT_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds for a record's way from its producer to a committed output: at least the
/// commit interval, and minutes while a backlog drains.
pub const END_TO_END_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A histogram with fixed bounds (seconds). Buckets hold what fell into them alone; the
/// exposition makes them cumulative.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, and the last for `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// The bucket an observation of `micros` falls into (`le` is inclusive).
    pub fn bucket_of(&self, micros: u64) -> usize {
        let seconds = micros as f64 / 1e6;
        self.bounds.partition_point(|bound| *bound < seconds)
    }

    pub fn observe(&self, value: Duration) {
        let micros = value.as_micros() as u64;
        self.buckets[self.bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Adds observations counted elsewhere: `counts` per bucket (as [`Histogram::bucket_of`]
    /// numbers them) and their sum.
    pub fn add(&self, counts: &[u64], sum_micros: u64) {
        for (bucket, n) in self.buckets.iter().zip(counts) {
            if *n > 0 {
                bucket.fetch_add(*n, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add(sum_micros, Ordering::Relaxed);
    }

    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(10)); // on the bound: le="0.01"
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        let mut e = Exposition::new();
        e.family("x_seconds", Kind::Histogram, "test").histogram(
            "x_seconds",
            &[("thread", "0")],
            &h,
        );
        let text = e.finish();
        assert!(
            text.contains("x_seconds_bucket{thread=\"0\",le=\"0.01\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{thread=\"0\",le=\"0.1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{thread=\"0\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_sum{thread=\"0\"} 3.06\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_count{thread=\"0\"} 3\n"), "{text}");
        assert!(text.starts_with("# HELP x_seconds test\n# TYPE x_seconds histogram\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.sample("m", &[("target", "a\"b\\c\nd")], 1.0);
        assert_eq!(e.finish(), "m{target=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn added_counts_land_in_their_buckets() {
        let h = Histogram::new(END_TO_END_BOUNDS);
        let mut counts = vec![0; h.buckets()];
        counts[h.bucket_of(7_000)] += 2; // 7 ms: le="0.01"
        counts[h.bucket_of(400_000_000)] += 1; // 400 s: +Inf
        h.add(&counts, 400_014_000);
        assert_eq!(h.count(), 3);
        assert_eq!(h.bucket_of(7_000), 1);
        assert_eq!(h.bucket_of(400_000_000), END_TO_END_BOUNDS.len());
    }
}
