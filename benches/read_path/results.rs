//! The bench's output: tables on stdout and `bench/results/read-path-inprocess.json`, whose
//! shape stays as it is for whoever reads the file.

use std::io::Write as _;
use std::path::Path;

use crate::timing::{ParRow, Row};
use crate::{KEYS, PARTITIONS};

/// The read cache the daemon-sized rows ran with.
pub(crate) struct CacheInfo {
    pub(crate) entries: usize,
    pub(crate) per_store: usize,
    /// What the rows call it ("read cache N/store").
    pub(crate) label: String,
    /// Simulated share of hits over the in-process and the loopback read sequences.
    pub(crate) hit_rate: f64,
    pub(crate) net_hit_rate: f64,
    pub(crate) hit_rate_fits: f64,
}

pub(crate) struct RunInfo {
    pub(crate) timer_ns: u64,
    pub(crate) load_secs: f64,
    pub(crate) redis_version: Option<String>,
}

/// Prints the tables and writes `bench/results/read-path-inprocess.json`.
pub(crate) fn print_and_write(
    root: &Path,
    rows: &[Row],
    par_rows: &[ParRow],
    cache: &CacheInfo,
    run: &RunInfo,
) {
    let mut table = String::new();
    table.push_str(
        "| group | read | reads | p50 ns | p90 ns | p99 ns | p99.9 ns | max ns | mean ns | reads/s (1 thread) |\n",
    );
    table.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |\n",
            r.group,
            r.name,
            r.reads,
            r.p50_ns,
            r.p90_ns,
            r.p99_ns,
            r.p999_ns,
            r.max_ns,
            r.mean_batch_ns,
            r.ops_per_sec()
        ));
    }
    let mut par_table = String::new();
    par_table.push_str("| read | threads | reads/s | vs 1 thread |\n|---|---:|---:|---:|\n");
    for r in par_rows {
        par_table.push_str(&format!(
            "| {} | {} | {:.0} | {:.2}x |\n",
            r.name,
            r.threads,
            r.reads_per_sec,
            r.reads_per_sec / r.single_thread_reads_per_sec
        ));
    }
    // The target is about the read path the daemon runs: `StateQuery::lookup` over stores with
    // the read cache sized as configured. The uncached worst is reported next to it.
    let worst_p50 = |tag: &str| {
        rows.iter()
            .filter(|r| r.name.starts_with("StateQuery::lookup") && r.name.contains(tag))
            .map(|r| r.p50_ns)
            .max()
            .unwrap_or(u64::MAX)
    };
    let lookup_p50 = worst_p50(&format!("({},", cache.label));
    let uncached_p50 = worst_p50("(no cache,");
    let target_met = lookup_p50 <= 1_000;
    println!();
    println!(
        "read_path: {KEYS} keys in {PARTITIONS} stores; timer overhead {} ns \
         (included in p50/p99; the mean is from an untimed pass)",
        run.timer_ns
    );
    println!(
        "read cache: {} entries in all ({} per store); simulated hits once warm: {:.1}% of the \
         in-process reads, {:.1}% of the loopback reads; {KEYS} per store: {:.1}%",
        cache.entries,
        cache.per_store,
        100.0 * cache.hit_rate,
        100.0 * cache.net_hit_rate,
        100.0 * cache.hit_rate_fits
    );
    println!("{table}");
    println!("{par_table}");
    println!(
        "target in-process read p50 <= 1000 ns: {} (worst StateQuery::lookup p50 with the \
         {}: {lookup_p50} ns; without a cache: {uncached_p50} ns)",
        if target_met { "met" } else { "NOT met" },
        cache.label,
    );

    let results = root.join("bench/results");
    std::fs::create_dir_all(&results).expect("bench/results");
    let json =
        format!(
        "{{\n  \"bench\": \"read_path\",\n  \"keys\": {KEYS},\n  \"partitions\": {PARTITIONS},\n  \
         \"cpus\": {},\n  \"load_secs\": {:.3},\n  \"timer_overhead_ns\": {},\n  \
         \"redis_version\": {},\n  \"cache_max_entries\": {},\n  \
         \"cache_entries_per_store\": {},\n  \"cache_hit_rate_simulated\": {:.4},\n  \
         \"cache_hit_rate_loopback_simulated\": {:.4},\n  \
         \"cache_hit_rate_every_key_fits_simulated\": {:.4},\n  \
         \"target_in_process_p50_ns\": 1000,\n  \"worst_lookup_p50_ns\": {lookup_p50},\n  \
         \"worst_uncached_lookup_p50_ns\": {uncached_p50},\n  \"target_met\": {target_met},\n  \
         \"rows\": [\n    {}\n  ],\n  \"parallel\": [\n    {}\n  ]\n}}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        run.load_secs,
        run.timer_ns,
        run.redis_version
            .as_ref()
            .map_or("null".to_owned(), |v| format!("\"{v}\"")),
        cache.entries,
        cache.per_store,
        cache.hit_rate,
        cache.net_hit_rate,
        cache.hit_rate_fits,
        rows.iter().map(Row::json).collect::<Vec<_>>().join(",\n    "),
        par_rows
            .iter()
            .map(ParRow::json)
            .collect::<Vec<_>>()
            .join(",\n    ")
    );
    let path = results.join("read-path-inprocess.json");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(json.as_bytes()))
        .expect("write results");
    println!("wrote {}", path.display());
}
