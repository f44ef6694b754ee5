"""Tables, charts and BENCHMARKS.md from the driver's results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

COLORS = {"hs": "#d2691e", "ks": "#4a6fa5"}
NAMES = {"hs": "hello-streams", "ks": "Kafka Streams"}

# (label, section, key, format, which is better). Labels may use {events}, {rate}.
ROWS = [
    ("Throughput, events/s ({events} preloaded events, process start → every input offset committed with its outputs)",
     "throughput", "events_per_s", "{:,.0f}", "higher"),
    ("… excluding start-up (first → last committed input offset), events/s", "throughput",
     "events_per_s_after_first_output", "{:,.0f}", "higher"),
    ("… share of the broker ceiling", "throughput", "ceiling_share", "{:.0%}", "higher"),
    ("End-to-end latency p50 at {rate} events/s, ms (event timestamp → visible to a read_committed consumer)",
     "latency", "p50_ms", "{:,.0f}", "lower"),
    ("End-to-end latency p99 at {rate} events/s, ms", "latency", "p99_ms", "{:,.0f}", "lower"),
    ("CPU seconds for the throughput phase (user + system)", "throughput", "cpu_seconds", "{:,.1f}", "lower"),
    ("… cores used on average in that phase", "throughput", "cores_used", "{:,.2f}", None),
    ("… broker CPU seconds in that phase (same machine)", "throughput", "broker_cpu_seconds", "{:,.1f}", None),
    ("… whole machine busy in that phase ({nproc} cores)", "throughput", "machine_cpu_busy", "{:.0%}", None),
    ("Peak RSS (VmHWM) of the processing run, MiB", "process", "peak_rss_mib", "{:,.0f}", "lower"),
    ("Recovery after kill -9 (same state dir): time to ready, s", "recovery", "seconds_to_ready", "{:,.2f}", "lower"),
    ("… changelog records restored", "recovery", "restored_records", "{:,.0f}", None),
    ("… restart → every output of the crash batch committed, s", "recovery", "seconds_to_all_outputs", "{:,.2f}",
     "lower"),
    ("Restore into an empty state dir: time to ready, s", "restore", "seconds_to_ready", "{:,.2f}", "lower"),
    ("… changelog records restored", "restore", "restored_records", "{:,.0f}", None),
    ("… records/s (restored records ÷ time to ready)", "restore", "records_per_s", "{:,.0f}", "higher"),
    ("Clean stop (SIGTERM → exit), s", "process", "stop_seconds", "{:,.2f}", "lower"),
]


def _value(results: dict, short: str, section: str, key: str):
    s = results["summary"].get(short, {})
    if key == "ceiling_share":
        ceiling = results.get("ceiling", {}).get("ceiling_records_per_s")
        tp = s.get("throughput", {}).get("events_per_s")
        return tp / ceiling if ceiling and tp else None
    return s.get(section, {}).get(key)


def markdown_table(results: dict) -> str:
    systems = list(results["summary"])
    cfg = results["config"]
    both = "hs" in systems and "ks" in systems
    head = "| | " + " | ".join(NAMES[s] for s in systems) + (" | hello-streams advantage |" if both else " |")
    sep = "|---|" + "---:|" * len(systems) + ("---:|" if both else "")
    lines = [head, sep]
    for label, section, key, fmt, better in ROWS:
        vals = [_value(results, s, section, key) for s in systems]
        if all(v is None for v in vals):
            continue
        cells = [fmt.format(v) if v is not None else "–" for v in vals]
        text = label.format(events=f"{cfg['events']:,}", rate=f"{cfg['latency_rate']:,}",
                            nproc=results["machine"].get("nproc", "?"))
        row = "| " + text + " | " + " | ".join(cells)
        if both:
            hs, ks = vals[systems.index("hs")], vals[systems.index("ks")]
            adv = ""
            if better and hs and ks:
                ratio = hs / ks if better == "higher" else ks / hs
                adv = f"{ratio:,.1f}×"
            row += " | " + adv
        lines.append(row + " |")
    return "\n".join(lines)


def cpu_bound_events_per_s(results: dict) -> dict | None:
    """What the machine's cores allow at the CPU per event measured in hello-streams' throughput phase:
    the daemon, the broker and the driver's consumer all run on the same cores."""
    t = results["summary"].get("hs", {}).get("throughput", {})
    cores = results["machine"].get("nproc")
    parts = [t.get(k) for k in ("cpu_seconds", "broker_cpu_seconds", "driver_cpu_seconds")]
    if not cores or not t.get("events") or any(p is None for p in parts):
        return None
    per_event = sum(parts) / t["events"]
    return {"cpu_per_event_us": per_event * 1e6, "events_per_s": cores / per_event}


def targets(results: dict) -> list[str]:
    s = results["summary"]
    if "hs" not in s or "ks" not in s:
        return []
    out = ["Targets from the issue (hello-streams vs Kafka Streams):"]

    def check(label, hs, ks, ratio_fn, goal, fmt):
        if hs is None or ks is None or not hs or not ks:
            out.append(f"  - {label}: n/a")
            return
        r = ratio_fn(hs, ks)
        out.append(f"  - {label}: {fmt.format(r)} → {'MET' if r >= goal else 'NOT MET'}")

    check("throughput ≥ 3× Kafka Streams", s["hs"]["throughput"].get("events_per_s"),
          s["ks"]["throughput"].get("events_per_s"), lambda h, k: h / k, 3, "{:.2f}×")
    cap = cpu_bound_events_per_s(results)
    if cap:
        out.append(f"    (CPU budget: hello-streams, the broker and the driver together spent "
                   f"{cap['cpu_per_event_us']:.1f} CPU µs per event, so {results['machine'].get('nproc')} cores "
                   f"cap this workload at ~{cap['events_per_s']:,.0f} events/s; 3× Kafka Streams would be "
                   f"{3 * s['ks']['throughput']['events_per_s']:,.0f})")
    check("peak RSS ≤ 1/5 of Kafka Streams", s["hs"]["process"].get("peak_rss_mib"),
          s["ks"]["process"].get("peak_rss_mib"), lambda h, k: k / h, 5, "1/{:.2f}")
    check(f"recovery after kill -9 at {results['config']['keys']:,} keys ≥ 10× faster (time to ready)", s["hs"]["recovery"].get("seconds_to_ready"),
          s["ks"]["recovery"].get("seconds_to_ready"), lambda h, k: k / h, 10, "{:.2f}×")
    return out


# ---------------------------------------------------------------------------------------------
# charts


def _bars(ax, groups: list[str], series: list[tuple[str, str, list]], unit: str, fmt: str,
          notes: dict[str, list[str]] | None = None) -> None:
    """Grouped bars: one group per label in `groups`, one bar per series (name, color, values);
    `notes[name][i]` is an extra line under the value label of that bar."""
    n = len(series)
    width = 0.8 / n
    top = max((v for _, _, vals in series for v in vals if v is not None), default=1) or 1
    for i, (name, color, vals) in enumerate(series):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        heights = [v or 0 for v in vals]
        bars = ax.bar(xs, heights, width * 0.92, label=name, color=color)
        for j, (b, v) in enumerate(zip(bars, vals)):
            if v is not None:
                text = fmt.format(v)
                note = (notes or {}).get(name, [None] * len(vals))[j]
                if note:
                    text += "\n" + note
                ax.text(b.get_x() + b.get_width() / 2, b.get_height() + top * 0.015, text,
                        ha="center", va="bottom", fontsize=9 if not note else 8.5)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(unit)
    ax.set_ylim(0, top * (1.3 if notes else 1.18))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}" if x >= 10 else f"{x:g}"))
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def charts(results: dict, out_dir: Path) -> list[Path]:
    systems = list(results["summary"])
    names = [NAMES[s] for s in systems]
    colors = [COLORS[s] for s in systems]
    cfg = results["config"]
    machine = results["machine"]
    foot = (f"{cfg['events']:,} events, {cfg['keys']:,} keys, {cfg['partitions']} partitions, exactly-once; "
            f"{machine.get('nproc')} cores, broker on the same machine; median of {cfg['rounds']} round(s)")
    paths = []

    def save(fig, name):
        fig.text(0.5, 0.01, foot, ha="center", fontsize=7.5, color="#555")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        p = out_dir / name
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)

    def v(short, section, key):
        return _value(results, short, section, key)

    # throughput
    fig, ax = plt.subplots(figsize=(7, 4.2))
    vals = [v(s, "throughput", "events_per_s") for s in systems]
    for i, (val, color) in enumerate(zip(vals, colors)):
        ax.bar(i, val or 0, 0.55, color=color)
        if val:
            ax.text(i, val * 1.01, f"{val:,.0f}/s", ha="center", va="bottom", fontsize=10)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("events/s (higher is better)")
    ax.set_ylim(0, max([x or 0 for x in vals] + [1]) * 1.18)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    title = "Throughput: preloaded events, process start → all outputs committed"
    ceiling = results.get("ceiling", {}).get("ceiling_records_per_s")
    if ceiling:
        title += f"\nbroker ceiling on this machine: {ceiling:,.0f} records/s (perf-test, 60-byte records)"
    ax.set_title(title, fontsize=10)
    save(fig, "throughput.png")

    # latency
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _bars(ax, ["p50", "p99"], [(NAMES[s], COLORS[s], [v(s, "latency", "p50_ms"), v(s, "latency", "p99_ms")])
                               for s in systems], "milliseconds (lower is better)", "{:,.0f} ms")
    ax.set_title(f"End-to-end latency at {cfg['latency_rate']:,} events/s\n"
                 "(event timestamp → output visible to a read_committed consumer)", fontsize=10)
    ax.legend(frameon=False)
    save(fig, "latency.png")

    # restore and recovery
    fig, ax = plt.subplots(figsize=(7, 4.2))
    def restored(short, section):
        n = v(short, section, "restored_records")
        if n is None:
            return None
        return f"{n / 1e6:.2f}M restored" if n >= 1e5 else f"{n:,.0f} restored"

    _bars(ax, ["recovery after kill -9\n(same state dir)", "restore into an empty state dir"],
          [(NAMES[s], COLORS[s], [v(s, "recovery", "seconds_to_ready"), v(s, "restore", "seconds_to_ready")])
           for s in systems], "seconds to ready (lower is better)", "{:,.1f} s",
          notes={NAMES[s]: [restored(s, "recovery"), restored(s, "restore")] for s in systems})
    ax.set_title("Restart → ready (all partitions assigned and restored)", fontsize=10)
    ax.legend(frameon=False)
    save(fig, "recovery.png")

    # memory and CPU
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 4.2))
    for ax, (section, key, unit, fmt, title) in zip((ax1, ax2), [
        ("process", "peak_rss_mib", "MiB (lower is better)", "{:,.0f} MiB", "Peak RSS (VmHWM)"),
        ("throughput", "cpu_seconds", "CPU seconds (lower is better)", "{:,.1f} s",
         f"CPU for {cfg['events']:,} events"),
    ]):
        vals = [v(s, section, key) for s in systems]
        for i, (val, color) in enumerate(zip(vals, colors)):
            ax.bar(i, val or 0, 0.55, color=color)
            if val is not None:
                ax.text(i, val * 1.01, fmt.format(val), ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(unit)
        ax.set_ylim(0, max([x or 0 for x in vals] + [1]) * 1.18)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}" if x >= 10 else f"{x:g}"))
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    save(fig, "resources.png")
    return paths


# ---------------------------------------------------------------------------------------------
# the Redis read comparison (written by another script) and BENCHMARKS.md


def load_redis(path: Path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {"error": f"could not read {path.name}: {e}"}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _rows_table(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def redis_markdown(data) -> str:
    """Renders redis-compare.json whatever its exact shape (a markdown string, rows, or a mapping)."""
    if isinstance(data, dict) and isinstance(data.get("markdown"), str):
        return data["markdown"]
    if isinstance(data, dict) and isinstance(data.get("table"), str):
        return data["table"]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return _rows_table(data)
    if isinstance(data, dict):
        for key in ("rows", "results", "table", "runs"):
            if isinstance(data.get(key), list) and all(isinstance(r, dict) for r in data[key]):
                extra = {k: v for k, v in data.items() if k != key and not isinstance(v, (dict, list))}
                notes = "".join(f"- {k}: {_fmt(v)}\n" for k, v in extra.items())
                return (notes + "\n" if notes else "") + _rows_table(data[key])
        if data and all(isinstance(v, dict) for v in data.values()):
            return _rows_table([{"": k, **v} for k, v in data.items()])
    return "```json\n" + json.dumps(data, indent=2) + "\n```"


def redis_summary(path: Path):
    """The header line and median table that bench/redis/compare writes, without its title."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    body = [line for line in lines if not line.startswith("# ")]
    return "\n".join(body).strip() or None


def benchmarks_md(results: dict, table: str, charts: list[Path], redis, repo: Path, md_dir: Path) -> str:
    cfg, m, s = results["config"], results["machine"], results["summary"]
    git = results["git"]
    lat_events = cfg["latency_rate"] * cfg["latency_seconds"]
    ceiling = results.get("ceiling")
    rel = [os.path.relpath(p, md_dir) for p in charts]
    images = "\n".join(f"![{Path(p).stem}]({p})" for p in rel)
    target_lines = "\n".join(t.replace("  - ", "- ") for t in targets(results)[1:]) or "- (needs both systems)"
    ks_desc = results["systems"].get("ks", {})
    hs_desc = results["systems"].get("hs", {})
    if ceiling:
        ceiling_md = (f"`kafka-producer-perf-test` ({ceiling['records']:,} records of 60 bytes, acks=all, "
                      f"{ceiling['partitions']} partitions): **{ceiling['produce_records_per_s']:,.0f} records/s**; "
                      f"`kafka-consumer-perf-test`: **{ceiling['consume_records_per_s']:,.0f} records/s** (fetch "
                      f"time); each the best of {len(ceiling.get('runs', [1]))} measurements (before and after the "
                      f"systems; other load on the machine only ever lowers them). The ceiling used for the "
                      f"share row is the smaller of the two. A stream processor "
                      f"reads each event once and writes it twice (output + changelog) inside transactions, so "
                      f"even a perfect one stays well below the ceiling.")
    else:
        ceiling_md = "Not measured in this run (`--ceiling-records 0`)."
    if redis is None:
        redis_md = ("`bench/results/redis-compare.json` was not present when this run finished; its table "
                    "(redis-benchmark against Redis vs against hello-streams' RESP port) is included here "
                    "whenever that file exists.")
    else:
        summary = redis_summary(repo / "bench" / "results" / "redis-compare.md")
        redis_md = ("From `bench/redis/compare` (medians; every run is in "
                    "`bench/results/redis-compare.json`):\n\n" + (summary or redis_markdown(redis)))
    projections = repo / "bench" / "results" / "projections.md"
    if projections.exists():
        projections_md = projections.read_text().strip()
    else:
        projections_md = ("`bench/results/projections.md` (written from `hello-streams-projection-bench`) "
                          "was not present when this run finished.")
    hs_rounds = s.get("hs", {}).get("rounds", 0)
    return f"""# Benchmarks

hello-streams side by side with the same application written on Kafka Streams 4.1.1
([`bench/kstreams-reference/`](bench/kstreams-reference/)), on the same broker, with the same
workload, fold, topic layout, exactly-once guarantee and output JSON. Everything below is
written by `bench/driver/run`; rerun it to refresh this file.

## Latest results

Run `{results['run_id']}` from {results['started']} to {results['finished']} ({results['driver_seconds'] / 60:.1f} min),
hello-streams at commit `{git.get('commit') or '?'}`{' with uncommitted changes' if git.get('dirty') else ''}
({hs_desc.get('version', '')}); median of {hs_rounds} round(s) per system.
Workload: {cfg['events']:,} preloaded events over {cfg['keys']:,} keys, then {lat_events:,} events at
{cfg['latency_rate']:,}/s, then {cfg['crash_events']:,} events around a kill -9; {cfg['partitions']} partitions.

{table}

The correctness gate passed for every run: each system committed exactly one output record per valid
event and one dead letter per poison event, and the last output record of every key equals the
driver's own model of the fold (count, total, mood, revision, outcome). A run that fails the gate
prints the mismatches and no numbers.

{images}

### Targets from the issue

{target_lines}

### Broker ceiling

{ceiling_md}

### Read path: Redis vs hello-streams

{redis_md}

### Projections: PostgreSQL and Redis

{projections_md}

## Machine

- {m.get('nproc')} cores ({m.get('cpu', '?')}), {m.get('memory_gib', '?')} GiB memory, Linux {m.get('kernel', '')}
- one local Kafka 4.1.1 broker (KRaft, `kafka/local-kafka`) on the same machine, 127.0.0.1
- Kafka Streams: {ks_desc.get('java', '?')}, JVM options: `{' '.join(ks_desc.get('java_opts') or []) or 'none (JVM defaults)'}`,
  `num.stream.threads={ks_desc.get('num_stream_threads', '?')}`; hello-streams
  `app.stream_threads={hs_desc.get('stream_threads', 1)}`

Two cores are shared by the broker, the system under test and the driver's own consumer, so the
absolute numbers are small-machine numbers; the ratios are what this suite is for.

## What is measured

One round per system runs these phases on fresh topics (`bench-<run>-<hs|ks><round>-*`), with
the lock `/tmp/hello-streams-bench.lock` held so that no two benchmarks overlap:

1. **Throughput.** The {cfg['events']:,} events are produced first (murmur2 partitioner, as the Java
   client), then the system starts. The clock runs from process start (JVM start-up and group join
   included) until the system's consumer group has committed every input offset. Both systems
   commit input offsets inside the transaction that writes the outputs (exactly-once v2), so that
   is the moment the last output became visible; the driver polls it every 5 ms (a stable-offset
   fetch, which also returns the moment an open transaction ends) instead of reading the million
   outputs while the clock runs, which cost ~1 CPU second of the two cores the system under test
   runs on. The outputs are read (and counted) afterwards, and the correctness gate checks them
   all. Throughput = all events (poison included) ÷ that time. CPU seconds (user + system) come
   from `/proc/<pid>/stat`; for Kafka Streams the pid is the JVM itself.
2. **Latency.** While the system keeps running, {lat_events:,} events are produced at
   {cfg['latency_rate']:,} events/s. Latency = wall clock when the driver's `read_committed` consumer
   receives the output − the event's producer timestamp (`eventTimestamp`), in ms; so it includes the
   commit interval (100 ms in both) and the transaction commit. Peak RSS is `VmHWM` from
   `/proc/<pid>/status` at the end of this phase.
3. **Recovery after kill -9.** {cfg['crash_events']:,} more events are produced to the instance that
   has been running since phase 1 (started on an empty state dir, so it has processed everything
   so far); when half of their outputs are committed it gets SIGKILL. After the broker has expired
   the dead member (both use `session.timeout.ms` = 10 s; that wait is reported in `latest.json`,
   not counted), the system restarts on the same state dir; time from process start until ready
   (see below), then until every output of the crash batch is committed. Kafka Streams under
   exactly-once keeps no checkpoint while it processes (only at clean shutdown and right after a
   restoration), so after the crash it restores every changelog record written since it started;
   hello-streams keeps the changelog offset inside RocksDB, committed with the data, and replays
   only the tail.
4. **Restore.** SIGTERM, wait until the consumer group is empty (Kafka Streams 4.1 does not leave
   the group on close, so its member has to expire: that wait is not counted either), wipe the
   state dir, restart; time from process start until ready. Ready means: hello-streams' `/readyz`
   answers 200 **and** its metrics show all {cfg['partitions']} partitions active and none restoring
   (`/readyz` alone also says 200 before the first assignment); Kafka Streams printed
   `KSTREAMS RUNNING` (its state listener saw RUNNING, which it reaches after restoration).
   Restored records are `hello_streams_restore_total` and the sum of Kafka Streams' `onRestoreEnd`
   counts.
5. **Correctness gate**, after the lock is released: every output and dead-letter record is read
   back (`read_committed`) and checked as described above.

Both systems: exactly-once (`exactly_once_v2` / `exactly_once`), commit interval 100 ms, RocksDB
store with a changelog topic; Kafka Streams with `statestore.cache.max.bytes=0` so every change
reaches the changelog as in hello-streams, {ks_desc.get('num_stream_threads', 1)} stream thread(s).
Rounds alternate between the systems (hs, ks, hs, ks, …).

Files: `bench/results/latest.json` (every number of every round, plus the reported restore rates,
first-output times, group-expiry waits and RSS of the restarted processes), `bench/results/latest.md`
(the table), and the charts above.

## Reproduce

```sh
kafka/local-kafka start                       # a local broker on 127.0.0.1:9092
cargo build --release --all-targets           # the daemon at $CARGO_TARGET_DIR/release/hello-streams
bench/driver/run                              # defaults: {cfg['events']:,} events, {cfg['keys']:,} keys, {cfg['partitions']} partitions, 1 round
bench/driver/run --rounds 3                   # more rounds (medians are reported)
bench/driver/run --events 200000 --keys 20000 --ceiling-records 0 --benchmarks-md ''   # a quick look
bench/driver/run --help
```

`bench/driver/run` creates a Python venv under `${{HELLO_STREAMS_CACHE:-~/.cache/hello-streams}}`
(`bench/driver/requirements.txt`: confluent-kafka, matplotlib), builds the Kafka Streams app with
Maven into the same cache (`bench/kstreams-reference/build`), checks the daemon binary
(`HELLO_STREAMS_BIN` or `$CARGO_TARGET_DIR/release/hello-streams`) and runs `bench/driver/bench.py`.
This run took {results['driver_seconds'] / 60:.1f} min, {results.get('lock_wait_seconds', 0) / 60:.1f} min of it
waiting for other benchmarks to release the lock; each extra round adds about as much as one
round of both systems took. Kafka Streams' JVM options can be set
with `KSTREAMS_JAVA_OPTS` (e.g. `-Xmx512m`), the stream threads of both systems with `--threads N`.
"""
