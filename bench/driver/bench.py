"""Benchmark driver: hello-streams side by side with the Kafka Streams reference.

Run it through bench/driver/run (venv, Java build, daemon check). See BENCHMARKS.md for what each
number means. Every timed system run holds the lock /tmp/hello-streams-bench.lock.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import report
import workload as wl
from kafkautil import Background, CommittedOffsets, CommittedReader, Kafka, read_all
from progress import elapsed, say
from systems import (HelloStreams, KafkaStreamsReference, Proc, SystemUnderTest, broker_cpu_seconds, broker_version,
                     machine_cpu)

REPO = Path(__file__).resolve().parents[2]
LOCK_PATH = "/tmp/hello-streams-bench.lock"


def _self_cpu() -> float:
    """CPU seconds of this driver process (its consumer's librdkafka threads included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


LOCK_WAITED = [0.0]


@contextlib.contextmanager
def bench_lock(what: str):
    """The machine-wide benchmark lock, so measurements of different people never overlap."""
    with open(LOCK_PATH, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for {LOCK_PATH} (another benchmark is running) before {what} ...")
            t0 = time.monotonic()
            fcntl.flock(f, fcntl.LOCK_EX)
            LOCK_WAITED[0] += time.monotonic() - t0
            say(f"  got the lock after {time.monotonic() - t0:.0f}s")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]  # nearest rank


CDF_STEP = 0.005  # the compact CDF keeps the value at every 0.5 % step (plus p99.9 and max)


def latency_distribution(e2e: list[float], arrivals: list[float], cpu: list[tuple[float, float, float, float]]) -> dict:
    """The compact CDF of all samples and their distribution over time (per second of arrival)."""
    s = sorted(e2e)
    n = len(s)

    def at(q: float) -> float:
        return s[min(n - 1, max(0, math.ceil(q * n) - 1))]

    steps = round(1 / CDF_STEP)
    cdf = {"step": CDF_STEP, "values_ms": [round(at(i / steps), 3) if i else round(s[0], 3) for i in range(steps + 1)],
           "p99_9_ms": round(at(0.999), 3), "max_ms": round(s[-1], 3), "samples": n}
    by_second: dict[int, list[float]] = {}
    for t, v in zip(arrivals, e2e):
        by_second.setdefault(int(t), []).append(v)
    timeline = []
    for sec in sorted(by_second):
        vals = sorted(by_second[sec])
        k = len(vals)
        timeline.append({"second": sec, "samples": k, "p50_ms": round(vals[max(0, math.ceil(0.5 * k) - 1)], 2),
                         "p99_ms": round(vals[max(0, math.ceil(0.99 * k) - 1)], 2), "max_ms": round(vals[-1], 2)})
    # CPU per second of the phase: the system, the broker and the whole machine.
    for row in timeline:
        inside = [c for c in cpu if row["second"] <= c[0] < row["second"] + 1]
        if inside:
            row["system_cores"] = round(statistics.mean(c[1] for c in inside), 3)
            row["broker_cores"] = round(statistics.mean(c[2] for c in inside), 3)
            row["machine_busy"] = round(statistics.mean(c[3] for c in inside), 3)
    return {"cdf": cdf, "timeline": timeline}


class CpuSampler(threading.Thread):
    """Every 0.25 s: (seconds since start, cores used by the system, by the broker, machine busy share)."""

    def __init__(self, pid: int, t0: float):
        super().__init__(daemon=True)
        self.pid, self.t0, self.samples = pid, t0, []
        self.stop = threading.Event()

    def run(self) -> None:
        from systems import proc_usage

        last = (time.monotonic(), proc_usage(self.pid)[0], broker_cpu_seconds(), machine_cpu())
        while not self.stop.wait(0.25):
            try:
                now = (time.monotonic(), proc_usage(self.pid)[0], broker_cpu_seconds(), machine_cpu())
            except OSError:
                return
            dt = max(1e-6, now[0] - last[0])
            busy = (now[3][0] - last[3][0]) / max(1, now[3][1] - last[3][1])
            self.samples.append((last[0] - self.t0, (now[1] - last[1]) / dt, (now[2] - last[2]) / dt, busy))
            last = now


# ---------------------------------------------------------------------------------------------
# the broker ceiling


def run_ceiling(args, kafka: Kafka, run_id: str) -> dict:
    topic = f"bench-{run_id}-ceiling"
    n = args.ceiling_records
    out: dict = {"records": n, "record_size": 60, "partitions": args.partitions}
    kafka.create_topics([topic], args.partitions)
    try:
        say(f"broker ceiling: kafka-producer-perf-test, {n:,} records of 60 bytes, acks=all ...")
        p = subprocess.run(
            [str(REPO / "bin/kafka-producer-perf-test"), "--topic", topic, "--num-records", str(n),
             "--record-size", "60", "--throughput", "-1", "--producer-props",
             f"bootstrap.servers={args.bootstrap_servers}", "acks=all"],
            capture_output=True, text=True, timeout=300)
        m = re.search(r"(\d+) records sent, ([\d.]+) records/sec", p.stdout)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"kafka-producer-perf-test failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        out["produce_records_per_s"] = float(m.group(2))
        say(f"  producer: {out['produce_records_per_s']:,.0f} records/s")
        say(f"broker ceiling: kafka-consumer-perf-test, {n:,} records ...")
        p = subprocess.run(
            [str(REPO / "bin/kafka-consumer-perf-test"), "--bootstrap-server", args.bootstrap_servers,
             "--topic", topic, "--messages", str(n), "--timeout", "30000"],
            capture_output=True, text=True, timeout=300)
        rows = [line.split(",") for line in p.stdout.splitlines() if line.count(",") >= 5]
        if p.returncode != 0 or len(rows) < 2:
            raise RuntimeError(f"kafka-consumer-perf-test failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        header = [h.strip() for h in rows[0]]
        values = dict(zip(header, [v.strip() for v in rows[-1]]))
        out["consume_records_per_s"] = float(values["fetch.nMsg.sec"])
        out["consume_records_per_s_incl_rebalance"] = float(values["nMsg.sec"])
        say(f"  consumer: {out['consume_records_per_s']:,.0f} records/s (fetch time)")
        out["ceiling_records_per_s"] = min(out["produce_records_per_s"], out["consume_records_per_s"])
    finally:
        kafka.delete_topics([topic])
    return out


# ---------------------------------------------------------------------------------------------
# one system run


class Run:
    def __init__(self, args, kafka: Kafka, w: wl.Workload, sut: SystemUnderTest, run_id: str, round_no: int):
        self.args, self.kafka, self.w, self.sut = args, kafka, w, sut
        self.tag = f"bench-{run_id}-{sut.short}{round_no}"
        self.app_id = f"{self.tag}-app"
        self.topics = {"input": f"{self.tag}-events", "output": f"{self.tag}-counts", "dlq": f"{self.tag}-dlq"}
        self.workdir = Path(args.work_dir) / self.tag
        self.state_dir = self.workdir / "state"
        self.procs: list[Proc] = []
        self.result: dict = {"system": sut.name, "short": sut.short, "round": round_no, "app_id": self.app_id}
        n, lat, crash = args.events, args.latency_rate * args.latency_seconds, args.crash_events
        self.phases = {"throughput": (0, n), "latency": (n, n + lat), "crash": (n + lat, n + lat + crash)}
        self.valid = {k: w.valid_in(a, b) for k, (a, b) in self.phases.items()}
        self.samples: dict | None = None

    def start(self, label: str) -> Proc:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        proc = self.sut.start(self.app_id, self.topics, self.state_dir, self.workdir / f"{label}.log")
        self.procs.append(proc)
        return proc

    def wait_outputs(self, reader: CommittedReader, target: int, proc: Proc, label: str, t0: float,
                     on_message=None) -> tuple[float, float | None]:
        """Polls committed outputs until `target`; returns (time of the last one, time of the first new one)."""
        deadline = time.monotonic() + self.args.phase_timeout
        first = None
        last_say = time.monotonic()
        start_count = reader.count
        while reader.count < target:
            # consume() waits out its whole timeout unless 10,000 records arrive first, so the
            # latency phase polls in short slices: a record's arrival time is taken when poll
            # returns, and 100 ms slices added up to 100 ms (phase-dependent) to every sample.
            got = reader.poll(0.1 if on_message is None else 0.002, on_message)
            if got and first is None:
                first = time.monotonic()
            last_say = self._tick(proc, label, t0, deadline, last_say, reader.count - start_count,
                                  target - start_count, "outputs committed")
        return time.monotonic(), first

    def _tick(self, proc: Proc, label: str, t0: float, deadline: float, last_say: float, done: int, total: int,
              unit: str) -> float:
        """Shows progress every 3 s; raises once the system died or the phase ran out of time.
        Returns when progress was last shown."""
        now = time.monotonic()
        if now - last_say >= 3:
            last_say = now
            cpu, _, rss = proc.usage() if proc.alive() else (0, 0, 0)
            say(f"    {label}: {done:,}/{total:,} {unit}, {done / max(now - t0, 1e-9):,.0f}/s, "
                f"RSS {rss:,.0f} MiB, CPU {cpu:.1f}s")
        if not proc.alive():
            raise RuntimeError(f"{self.sut.name} exited during {label} (status {proc.popen.returncode}):\n"
                               f"{proc.log_tail()}")
        if now > deadline:
            raise RuntimeError(f"{label}: only {done:,}/{total:,} {unit} after {self.args.phase_timeout}s")
        return last_say

    def wait_committed(self, watch: CommittedOffsets, target: int, proc: Proc, label: str,
                       t0: float) -> tuple[float, float | None]:
        """Polls the group's committed input offsets until they reach `target` (the input's end);
        returns (time they did, time the first offset was committed)."""
        deadline = time.monotonic() + self.args.phase_timeout
        first = None
        last_say = time.monotonic()
        while True:
            # Returns at once, or, while a transaction holding offsets is open, when it ends.
            done = watch.total()
            now = time.monotonic()
            if done > 0 and first is None:
                first = now
            if done >= target:
                return now, first
            last_say = self._tick(proc, label, t0, deadline, last_say, done, target, "input offsets committed")
            time.sleep(0.005)

    def execute(self) -> dict:
        args, kafka, w, sut, res = self.args, self.kafka, self.w, self.sut, self.result
        P = args.partitions
        say(f"== {sut.name}, round {res['round'] + 1}: topics {self.tag}-*, {P} partitions")
        kafka.create_topics(list(self.topics.values()), P)
        sut.prepare(self.app_id)
        a, b = self.phases["throughput"]
        secs = kafka.produce(self.topics["input"], w.record, a, b, "preload")
        say(f"  preloaded {b - a:,} events ({self.valid['throughput']:,} valid) in {secs:.1f}s")
        reader = CommittedReader(args.bootstrap_servers, self.topics["output"], P, self.tag)
        try:
            proc = self._throughput_and_latency(reader)
            self._crash(reader, proc)
            self._restore()
        finally:
            reader.close()
        return res

    def _throughput_and_latency(self, reader: CommittedReader) -> Proc:
        args, res, sut = self.args, self.result, self.sut
        n = self.phases["throughput"][1]
        watch = CommittedOffsets(args.bootstrap_servers, self.app_id, self.topics["input"], args.partitions)
        end = watch.end_total()
        say(f"  throughput: starting {sut.name}; the clock runs until all {end:,} input offsets are committed "
            f"(each in the transaction of its outputs)")
        broker0, machine0, driver0 = broker_cpu_seconds(), machine_cpu(), _self_cpu()
        proc = self.start("run")
        t0 = proc.started
        try:
            t_done, t_first = self.wait_committed(watch, end, proc, "throughput", t0)
        finally:
            watch.close()
        cpu, hwm, _ = proc.usage()
        broker1, machine1, driver1 = broker_cpu_seconds(), machine_cpu(), _self_cpu()
        res["runtime"] = sut.runtime_info(proc)
        # The latency phase below counts on from here. Every output of this phase is committed
        # by now (with its input offsets), and the correctness gate reads them all at the end.
        reader.skip_to_end(self.valid["throughput"])
        secs = t_done - t0
        busy = (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1])
        res["throughput"] = {
            "events": n, "valid_events": self.valid["throughput"], "seconds": secs,
            "events_per_s": n / secs, "first_output_after_s": (t_first - t0) if t_first else None,
            "events_per_s_after_first_output": n / (t_done - t_first) if t_first and t_done > t_first else None,
            "cpu_seconds": cpu, "cores_used": cpu / secs, "peak_rss_mib": hwm,
            "broker_cpu_seconds": broker1 - broker0, "driver_cpu_seconds": driver1 - driver0,
            "machine_cpu_busy": busy,
        }
        say(f"  throughput: {n / secs:,.0f} events/s ({n:,} events in {secs:.2f}s from process start; "
            f"CPU {cpu:.1f}s, peak RSS {hwm:,.0f} MiB; broker CPU {broker1 - broker0:.1f}s, "
            f"driver CPU {driver1 - driver0:.1f}s, machine {busy:.0%} busy)")

        a, b = self.phases["latency"]
        if b > a:
            settle_s, settle_busy = self._settle()
            say(f"  latency: {b - a:,} events at {args.latency_rate:,} events/s while {sut.name} runs")
            e2e: list[float] = []
            arrivals: list[float] = []
            processing: list[float] = []
            t_lat = time.monotonic()

            def on_message(m):
                now_ms = time.time() * 1000.0
                v = json.loads(m.value())
                e2e.append(now_ms - v["eventTimestamp"])
                arrivals.append(time.monotonic() - t_lat)
                processing.append(v["processedAt"] - v["eventTimestamp"])

            feeder = Background(self.kafka.produce, self.topics["input"], self.w.record, a, b, "latency",
                                args.latency_rate)
            sampler = CpuSampler(proc.pid, t_lat)
            sampler.start()
            feeder.start()
            try:
                self.wait_outputs(reader, self.valid["throughput"] + self.valid["latency"], proc, "latency", t_lat,
                                  on_message)
            finally:
                sampler.stop.set()
            feeder.get()
            sampler.join(5)
            # Every sample is kept (latency-samples.json.gz); latest.json gets the compact CDF.
            self.samples = {"e2e_ms": e2e, "arrival_s": arrivals}
            res["latency"] = {
                "rate": args.latency_rate, "seconds": args.latency_seconds, "samples": len(e2e),
                "settle_seconds": settle_s, "machine_busy_before": settle_busy,
                "p50_ms": percentile(e2e, 0.50), "p99_ms": percentile(e2e, 0.99), "max_ms": max(e2e),
                "p99_9_ms": percentile(e2e, 0.999),
                "processing_p50_ms": percentile(processing, 0.50), "processing_p99_ms": percentile(processing, 0.99),
                **latency_distribution(e2e, arrivals, sampler.samples),
            }
            lat = res["latency"]
            say(f"  latency: end-to-end p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
                f"(event timestamp -> visible to a read_committed consumer); processing p50 "
                f"{lat['processing_p50_ms']:.0f} ms")
        cpu, hwm, rss = proc.usage()
        res["process"] = {"cpu_seconds": cpu, "peak_rss_mib": hwm, "rss_mib_at_end": rss}
        say(f"  so far: CPU {cpu:.1f}s, peak RSS {hwm:,.0f} MiB")
        return proc

    def _settle(self) -> tuple[float, float]:
        """Waits until the machine is quiet before the latency phase, so that work left from the
        1,000,000-record throughput phase (the broker's log cleaner, store compactions) is not
        measured as latency. Returns (seconds waited, machine busy share in the last second)."""
        t0 = time.monotonic()
        busy = 1.0
        while time.monotonic() - t0 < self.args.settle_max_seconds:
            m0 = machine_cpu()
            time.sleep(1.0)
            m1 = machine_cpu()
            busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
            if busy <= self.args.settle_busy:
                break
        waited = time.monotonic() - t0
        say(f"  settle: machine {busy:.0%} busy after {waited:.1f}s (waits for <= {self.args.settle_busy:.0%}, "
            f"at most {self.args.settle_max_seconds:.0f}s)")
        return waited, busy

    def _restore(self) -> None:
        res, sut = self.result, self.sut
        wait = self.kafka.wait_group_empty(self.app_id, 120, lambda g: sut.group_members(self.kafka, g))
        shutil.rmtree(self.state_dir)
        say(f"  restore: state dir wiped (group empty after {wait:.1f}s); restarting {sut.name}")
        proc = self.start("restore")
        ready_t, info = sut.wait_ready(proc, self.args.phase_timeout)
        secs = ready_t - proc.started
        cpu, hwm, _ = proc.usage()
        res["restore"] = {"seconds_to_ready": secs, "restored_records": info["restored"],
                          "records_per_s": info["restored"] / secs if secs > 0 else None,
                          "group_empty_wait_s": wait, "cpu_seconds": cpu, "peak_rss_mib": hwm,
                          **{k: v for k, v in info.items() if k != "restored"}}
        say(f"  restore: ready after {secs:.2f}s, {info['restored']:,} changelog records restored "
            f"({res['restore']['records_per_s'] or 0:,.0f} records/s)")
        stop_secs, clean = proc.terminate()
        say(f"  stopped with SIGTERM in {stop_secs:.1f}s{'' if clean else ' (had to SIGKILL)'}")

    def _crash(self, reader: CommittedReader, proc: Proc) -> None:
        """Kills the instance that has been processing since it started on an empty state dir."""
        res, sut = self.result, self.sut
        a, b = self.phases["crash"]
        before = reader.count
        target_all = before + self.valid["crash"]
        kill_at = before + self.valid["crash"] // 2
        say(f"  crash: producing {b - a:,} more events; kill -9 once half of their outputs are committed")
        feeder = Background(self.kafka.produce, self.topics["input"], self.w.record, a, b, "crash batch")
        feeder.start()
        t0 = time.monotonic()
        self.wait_outputs(reader, kill_at, proc, "crash batch", t0)
        proc.kill9()
        t_kill = time.monotonic()
        feeder.get()
        at_kill = reader.count - before
        # Outputs of transactions that were committed just before the kill may still arrive.
        reader.poll(0.5)
        wait = self.kafka.wait_group_empty(self.app_id, 120, lambda g: sut.group_members(self.kafka, g))
        say(f"  crash: killed -9 with {at_kill:,}/{self.valid['crash']:,} outputs committed; "
            f"group empty after {wait:.1f}s; restarting on the same state dir")
        proc = self.start("recover")
        ready_t, info = sut.wait_ready(proc, self.args.phase_timeout)
        secs = ready_t - proc.started
        t_all, _ = self.wait_outputs(reader, target_all, proc, "after recovery", ready_t)
        cpu, hwm, _ = proc.usage()
        res["recovery"] = {"seconds_to_ready": secs, "restored_records": info["restored"],
                           "outputs_committed_at_kill": at_kill, "crash_batch_valid": self.valid["crash"],
                           "group_empty_wait_s": wait, "seconds_kill_to_group_empty": time.monotonic() - t_kill,
                           "seconds_to_all_outputs": t_all - proc.started, "cpu_seconds": cpu,
                           "peak_rss_mib": hwm, **{k: v for k, v in info.items() if k != "restored"}}
        say(f"  recovery: ready after {secs:.2f}s ({info['restored']:,} changelog records restored); all outputs "
            f"committed {t_all - proc.started:.2f}s after the restart")
        stop_secs, clean = proc.terminate()
        res["process"]["stop_seconds"], res["process"]["stopped_cleanly"] = stop_secs, clean
        say(f"  stopped with SIGTERM in {stop_secs:.1f}s{'' if clean else ' (had to SIGKILL)'}")

    def verify(self, expected: dict[str, wl.KeyState]) -> list[str]:
        total_valid = sum(self.valid.values())
        total_events = self.phases["crash"][1]
        total_poison = total_events - total_valid
        say(f"  correctness: reading {self.topics['output']} (read_committed) ...")
        count, last = read_all(self.args.bootstrap_servers, self.topics["output"], self.args.partitions,
                               f"{self.tag}-verify", expected=total_valid, timeout=120)
        dlq, _ = read_all(self.args.bootstrap_servers, self.topics["dlq"], self.args.partitions,
                          f"{self.tag}-verify-dlq", expected=total_poison, timeout=60)
        problems = []
        if count != total_valid:
            problems.append(f"{count:,} committed output records, expected exactly {total_valid:,} (one per valid event)")
        if dlq != total_poison:
            problems.append(f"{dlq:,} committed dead letters, expected exactly {total_poison:,}")
        problems += wl.compare(expected, last)
        self.result["correctness"] = {"outputs": count, "expected_outputs": total_valid, "dead_letters": dlq,
                                      "expected_dead_letters": total_poison, "keys": len(last),
                                      "ok": not problems}
        if not problems:
            say(f"  correctness: OK — {count:,} outputs, {dlq:,} dead letters, final state of all "
                f"{len(expected):,} keys as the model predicts")
        return problems

    def cleanup(self, keep: bool) -> None:
        for p in self.procs:
            if p.alive():
                p.kill9()
        if keep:
            say(f"  kept topics {self.tag}-* and {self.workdir}")
            return
        self.kafka.delete_topics([*self.topics.values(), *self.sut.internal_topics(self.app_id)])
        self.kafka.delete_groups([self.app_id])
        self.sut.forget(self.app_id)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------


def machine() -> dict:
    info = {"nproc": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    info["kernel"] = os.uname().release
    return info


def git_info() -> dict:
    def git(*a):
        p = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else ""

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "src",
                                                                              "Cargo.toml", "Cargo.lock"))}


def summarize(runs: list[dict]) -> dict:
    """Median of every numeric metric per system over its rounds."""
    out: dict = {}
    for short in dict.fromkeys(r["short"] for r in runs):
        mine = [r for r in runs if r["short"] == short]
        s: dict = {"system": mine[0]["system"], "rounds": len(mine)}
        for section in ("throughput", "latency", "process", "restore", "recovery"):
            keys = {k for r in mine for k, v in r.get(section, {}).items() if isinstance(v, (int, float))
                    and not isinstance(v, bool)}
            s[section] = {k: statistics.median([r[section][k] for r in mine if r.get(section, {}).get(k) is not None])
                          for k in sorted(keys) if any(r.get(section, {}).get(k) is not None for r in mine)}
        out[short] = s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    ap.add_argument("--systems", default="hs,ks,ksp,hsw",
                    help="comma-separated, in run order: hs (hello-streams, windows off: the same work as Kafka "
                         "Streams), hsw (hello-streams with its windowed fold on), ks (Kafka Streams, exactly_once_v2 + "
                         "transactional state stores, classic group protocol), ksp (the same with "
                         "group.protocol=streams, KIP-1071)")
    ap.add_argument("--rounds", type=int, default=1, help="runs per system, alternating (default 1)")
    ap.add_argument("--events", type=int, default=1_000_000, help="preloaded events for the throughput phase")
    ap.add_argument("--keys", type=int, default=1_000_000,
                    help="the issue states its recovery target at 1,000,000 keys")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--latency-rate", type=int, default=5_000, help="events/s of the latency phase (0 skips it)")
    ap.add_argument("--latency-seconds", type=int, default=10)
    ap.add_argument("--settle-busy", type=float, default=0.3,
                    help="before the latency phase, wait until the machine is at most this busy over 1 s")
    ap.add_argument("--settle-max-seconds", type=float, default=30, help="... but no longer than this")
    ap.add_argument("--crash-events", type=int, default=200_000, help="events produced before the kill -9")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--ceiling-records", type=int, default=1_000_000, help="records of the broker perf tests (0 skips)")
    ap.add_argument("--hs-bin", required=True, help="the hello-streams daemon binary")
    ap.add_argument("--ks-build-dir", required=True, help="directory of hello-kstreams-reference.jar")
    ap.add_argument("--threads", type=int, default=1,
                    help="stream threads of each system (hello-streams app.stream_threads, Kafka Streams "
                         "num.stream.threads); the same for both, default 1 as both systems' default")
    ap.add_argument("--ks-java-opts", default=os.environ.get("KSTREAMS_JAVA_OPTS", ""),
                    help="JVM options for Kafka Streams (default: none, the JVM's defaults)")
    ap.add_argument("--hs-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a hello-streams setting (its --set), repeatable; recorded in the results")
    ap.add_argument("--hs-log-filter", default="warn", help="hello-streams log.filter (its log is in the work dir)")
    ap.add_argument("--ks-log-level", default="warn", help="Kafka Streams log level (its log is in the work dir)")
    ap.add_argument("--phase-timeout", type=int, default=600, help="seconds any one phase may take")
    ap.add_argument("--work-dir", default=None, help="state dirs and logs (default: $CACHE/bench-work)")
    ap.add_argument("--results-dir", default=str(REPO / "bench/results"))
    ap.add_argument("--benchmarks-md", default=str(REPO / "BENCHMARKS.md"), help="'' to not write it")
    ap.add_argument("--readme", default=str(REPO / "README.md"),
                    help="README whose measured block (between <!-- measured:begin --> and <!-- measured:end -->) "
                         "is regenerated; only written together with --benchmarks-md; '' to not write it")
    ap.add_argument("--keep", action="store_true", help="keep topics, state dirs and logs")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: render the table, charts and BENCHMARKS.md again from the "
                         "results dir's latest.json (e.g. after a new bench/redis/compare run)")
    args = ap.parse_args()
    cache = Path(os.environ.get("HELLO_STREAMS_CACHE", Path.home() / ".cache/hello-streams"))
    args.work_dir = args.work_dir or str(cache / "bench-work")
    run_id = time.strftime("%m%d%H%M%S") + f"-{os.getpid()}"

    if args.report_only:
        results = json.loads((Path(args.results_dir) / "latest.json").read_text())
        return publish(args, results)

    kafka = Kafka(args.bootstrap_servers)
    try:
        kafka.check()
    except Exception as e:  # noqa: BLE001
        print(f"error: no Kafka broker at {args.bootstrap_servers} ({e}); start one with kafka/local-kafka start",
              file=sys.stderr)
        return 2
    suts: dict[str, SystemUnderTest] = {
        "hs": HelloStreams(args.bootstrap_servers, args.partitions, Path(args.hs_bin), args.threads,
                           args.hs_log_filter, args.hs_set),
        "hsw": HelloStreams(args.bootstrap_servers, args.partitions, Path(args.hs_bin), args.threads,
                            args.hs_log_filter, args.hs_set, windows=True),
        "ks": KafkaStreamsReference(args.bootstrap_servers, args.partitions, Path(args.ks_build_dir),
                                    args.threads, args.ks_java_opts.split(), args.ks_log_level, "classic", REPO),
        "ksp": KafkaStreamsReference(args.bootstrap_servers, args.partitions, Path(args.ks_build_dir),
                                     args.threads, args.ks_java_opts.split(), args.ks_log_level, "streams", REPO),
    }
    order = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not order or any(s not in suts for s in order):
        ap.error("--systems takes hs, hsw, ks and/or ksp")

    lat_events = args.latency_rate * args.latency_seconds
    total = args.events + lat_events + args.crash_events
    say(f"run {run_id}: {total:,} events over {args.keys:,} keys ({args.events:,} preloaded + {lat_events:,} at "
        f"{args.latency_rate:,}/s + {args.crash_events:,} around a kill -9), {args.partitions} partitions, "
        f"{args.rounds} round(s) of {', '.join(suts[s].name for s in order)}")
    w = wl.generate(total, args.keys, args.seed)
    expected = wl.model(w)
    say(f"workload ready: {w.valid_in(0, total):,} valid events, {total - w.valid_in(0, total):,} poison; "
        f"the model predicts {len(expected):,} keys")

    results: dict = {"run_id": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                     "git": git_info(), "config": {k: v for k, v in vars(args).items()
                                                     if k not in ("results_dir", "benchmarks_md", "work_dir")},
                     "broker": broker_version(), "systems": {s: suts[s].describe() for s in order}, "runs": []}
    samples: dict = {}
    failures: list[str] = []
    try:
        ceilings = []
        if args.ceiling_records > 0:
            with bench_lock("the broker ceiling"):
                ceilings.append(run_ceiling(args, kafka, run_id + "a"))
        for round_no in range(args.rounds):
            for short in order:
                run = Run(args, kafka, w, suts[short], run_id, round_no)
                try:
                    with bench_lock(f"{suts[short].name} round {round_no + 1}"):
                        run.execute()
                    problems = run.verify(expected)
                    if problems:
                        failures += [f"{suts[short].name} round {round_no + 1}: {p}" for p in problems]
                    results["runs"].append(run.result)
                    if run.samples:
                        samples[f"{short}{round_no}"] = run.samples
                finally:
                    run.cleanup(args.keep)
        if args.ceiling_records > 0:
            with bench_lock("the broker ceiling (again)"):
                ceilings.append(run_ceiling(args, kafka, run_id + "b"))
            # Other load on the machine can only lower a perf-test result: keep the best of each.
            best = dict(ceilings[0])
            for key in ("produce_records_per_s", "consume_records_per_s", "consume_records_per_s_incl_rebalance"):
                best[key] = max(c[key] for c in ceilings)
            best["ceiling_records_per_s"] = min(best["produce_records_per_s"], best["consume_records_per_s"])
            best["runs"] = ceilings
            results["ceiling"] = best
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

    if failures:
        print("\nCORRECTNESS GATE FAILED: the measurements above are void; no table, JSON, charts or "
              "BENCHMARKS.md were written. Mismatches:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1

    results["summary"] = summarize(results["runs"])
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["driver_seconds"] = elapsed()
    results["lock_wait_seconds"] = LOCK_WAITED[0]
    if samples:
        write_samples(Path(args.results_dir) / "latency-samples.json.gz", results["run_id"], samples)
    return publish(args, results)


def write_samples(path: Path, run_id: str, samples: dict) -> None:
    """Every end-to-end latency sample of every run's latency phase (ms, 0.01 ms resolution), with its
    arrival time (s since the phase started); latest.json only has their compact CDF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"run_id": run_id, "runs": {k: {"e2e_ms": [round(x, 2) for x in v["e2e_ms"]],
                                          "arrival_s": [round(x, 4) for x in v["arrival_s"]]}
                                      for k, v in samples.items()}}
    with gzip.open(path, "wt") as f:
        json.dump(data, f, separators=(",", ":"))


def publish(args, results: dict) -> int:
    """Writes latest.json, latest.md, the charts and BENCHMARKS.md, and prints the table."""
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    redis = report.load_redis(results_dir / "redis-compare.json")
    table = report.markdown_table(results)
    charts = report.charts(results, results_dir)
    (results_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (results_dir / "latest.md").write_text(table + "\n\n" + report.settings_md(results) + "\n\n"
                                           + report.targets_md(results) + "\n")
    if args.benchmarks_md:
        path = Path(args.benchmarks_md)
        path.write_text(report.with_kept_section(path, report.benchmarks_md(results, table, charts, redis, REPO,
                                                                              path.parent, results_dir)))
        if getattr(args, "readme", ""):
            report.update_readme(Path(args.readme), results)
    print()
    print(table)
    print()
    print(report.settings_md(results))
    print()
    for line in report.targets(results):
        print(line)
    say(f"done in {results['driver_seconds'] / 60:.1f} min; results: {results_dir / 'latest.json'}, charts: "
        f"{', '.join(str(c) for c in charts)}" + (f"; {args.benchmarks_md} refreshed" if args.benchmarks_md else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
