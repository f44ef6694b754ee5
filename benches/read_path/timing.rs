//! Timing one kind of read: each read on its own (percentiles) and a whole untimed pass (the
//! mean), the rounds interleaved so that drift and other processes spread over every row, and
//! several threads at once for what reads share.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) group: &'static str,
    pub(crate) name: String,
    pub(crate) reads: usize,
    /// Interleaved repetitions; every statistic is the median over them.
    pub(crate) rounds: usize,
    pub(crate) p50_ns: u64,
    pub(crate) p90_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) p999_ns: u64,
    pub(crate) max_ns: u64,
    /// Mean of the individually timed reads (includes one `Instant::now()` pair each).
    pub(crate) mean_timed_ns: f64,
    /// Mean from one untimed pass: total time / reads.
    pub(crate) mean_batch_ns: f64,
}

impl Row {
    pub(crate) fn ops_per_sec(&self) -> f64 {
        1e9 / self.mean_batch_ns
    }

    pub(crate) fn json(&self) -> String {
        format!(
            "{{\"group\":\"{}\",\"name\":\"{}\",\"reads\":{},\"rounds\":{},\"p50_ns\":{},\"p90_ns\":{},\
             \"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"mean_timed_ns\":{:.1},\
             \"mean_batch_ns\":{:.1},\"ops_per_sec_one_thread\":{:.0}}}",
            self.group,
            self.name,
            self.reads,
            self.rounds,
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
            self.mean_timed_ns,
            self.mean_batch_ns,
            self.ops_per_sec()
        )
    }
}

/// Several threads reading at once: only throughput (no per-read timing).
#[derive(Debug, Clone)]
pub(crate) struct ParRow {
    pub(crate) name: String,
    pub(crate) threads: usize,
    pub(crate) reads: usize,
    pub(crate) reads_per_sec: f64,
    pub(crate) single_thread_reads_per_sec: f64,
}

impl ParRow {
    pub(crate) fn json(&self) -> String {
        format!(
            "{{\"name\":\"{}\",\"threads\":{},\"reads\":{},\"reads_per_sec\":{:.0},\
             \"single_thread_reads_per_sec\":{:.0},\"scaling\":{:.2}}}",
            self.name,
            self.threads,
            self.reads,
            self.reads_per_sec,
            self.single_thread_reads_per_sec,
            self.reads_per_sec / self.single_thread_reads_per_sec
        )
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Times `read(0..n)` twice: each call on its own (percentiles), then as one pass (mean).
/// `read` gets the position in the read sequence, whose key bytes lie in one flat array read
/// front to back, so the key is in cache as it is in a server's input buffer.
fn measure(group: &'static str, name: &str, n: usize, read: &mut dyn FnMut(usize)) -> Row {
    // Warm-up: caches, branch predictors, lazily allocated buffers.
    for i in 0..n / 10 {
        read(i);
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        read(i);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    let start = Instant::now();
    for i in 0..n {
        read(i);
    }
    let batch = start.elapsed();
    let mean_timed_ns = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
    samples.sort_unstable();
    Row {
        group,
        name: name.to_owned(),
        reads: n,
        rounds: 1,
        p50_ns: percentile(&samples, 0.50),
        p90_ns: percentile(&samples, 0.90),
        p99_ns: percentile(&samples, 0.99),
        p999_ns: percentile(&samples, 0.999),
        max_ns: *samples.last().unwrap(),
        mean_timed_ns,
        mean_batch_ns: batch.as_nanos() as f64 / n as f64,
    }
}

/// One thing to measure.
pub(crate) struct Case<'a> {
    group: &'static str,
    name: String,
    read: Box<dyn FnMut(usize) + 'a>,
}

pub(crate) fn case<'a>(group: &'static str, name: &str, read: impl FnMut(usize) + 'a) -> Case<'a> {
    Case {
        group,
        name: name.to_owned(),
        read: Box::new(read),
    }
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs every case `rounds` times, interleaved (a, b, c, a, b, c, ...) so drift and noise from
/// other processes spread over all of them; each statistic is the median over the rounds.
pub(crate) fn run_cases(cases: &mut [Case<'_>], n: usize, rounds: usize) -> Vec<Row> {
    let mut all: Vec<Vec<Row>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (c, results) in cases.iter_mut().zip(&mut all) {
            let row = measure(c.group, &c.name, n, &mut *c.read);
            eprintln!(
                "  [{}/{rounds}] {:<50} p50 {:>7} ns  p99 {:>7} ns  mean {:>8.1} ns",
                round + 1,
                row.name,
                row.p50_ns,
                row.p99_ns,
                row.mean_batch_ns
            );
            results.push(row);
        }
    }
    all.into_iter()
        .map(|rs| {
            let pick_u = |f: fn(&Row) -> u64| median_u64(rs.iter().map(f).collect());
            let pick_f = |f: fn(&Row) -> f64| median_f64(rs.iter().map(f).collect());
            Row {
                group: rs[0].group,
                name: rs[0].name.clone(),
                reads: rs[0].reads,
                rounds: rs.len(),
                p50_ns: pick_u(|r| r.p50_ns),
                p90_ns: pick_u(|r| r.p90_ns),
                p99_ns: pick_u(|r| r.p99_ns),
                p999_ns: pick_u(|r| r.p999_ns),
                max_ns: pick_u(|r| r.max_ns),
                mean_timed_ns: pick_f(|r| r.mean_timed_ns),
                mean_batch_ns: pick_f(|r| r.mean_batch_ns),
            }
        })
        .collect()
}

/// `threads` threads each run `read` over all `n` positions (starting at different offsets)
/// at once; the aggregate reads/s against the single-thread mean.
pub(crate) fn measure_parallel(
    name: &str,
    threads: usize,
    n: usize,
    single: &Row,
    read: &(dyn Fn(usize) + Sync),
) -> ParRow {
    let barrier = Barrier::new(threads);
    let elapsed: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let offset = t * n / threads;
                    let mine = || (offset..n).chain(0..offset);
                    for i in mine().take(n / 10) {
                        read(i);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    for i in mine() {
                        read(i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let slowest = elapsed.iter().max().unwrap().as_secs_f64();
    let row = ParRow {
        name: name.to_owned(),
        threads,
        reads: n * threads,
        reads_per_sec: (n * threads) as f64 / slowest,
        single_thread_reads_per_sec: single.ops_per_sec(),
    };
    eprintln!(
        "  {:<50} {} threads: {:>10.0} reads/s ({:.2}x one thread)",
        row.name,
        threads,
        row.reads_per_sec,
        row.reads_per_sec / row.single_thread_reads_per_sec
    );
    row
}

/// The cost of the timer itself: an empty read timed like the others.
pub(crate) fn timer_overhead_ns(n: usize) -> u64 {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        black_box(i);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    percentile(&samples, 0.5)
}
