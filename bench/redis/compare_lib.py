#!/usr/bin/env python3
"""Helpers of bench/redis/compare (standard library only, except `chart`: matplotlib).

Subcommands:
  keys-file N PATH             write N lines "k:<12 digits>|Hello" (kafka-console-producer input)
  wait-loaded PORT N TIMEOUT   poll MGET over RESP until all N keys answer a number
  dump PORT N PATH             write every key's GET value (MGET over RESP) as "key value" lines
  redis-proto VALUES PATH      turn "key value" lines into a RESP SET stream for redis-cli --pipe
  same PORT_A PORT_B N         check that two servers answer every key with the same value
  same-http HS_PORT WEBDIS_PORT N SAMPLES   check that hello-streams' GET /v1/state/{key} and
                               webdis' GET /GET/{key} answer 200 and the same count for SAMPLES keys
  cpu-ticks PID...             utime+stime of the processes together, in clock ticks
  record CSV RUN SERVER P N TICKS ERRORS   one redis-benchmark --csv result as a JSON line
  record-wrk OUT RUN SERVER TICKS          one wrk run (the WRK_JSON line of wrk-get.lua) as a JSON line
  summarize RUNS_JSONL META_JSON OUT_JSON OUT_MD   the RESP rows: redis-compare.{json,md}
  read-path RUNS_JSONL META_JSON OUT_JSON OUT_MD   every row, with the goals: read-path.{json,md}
  chart READ_PATH_JSON OUT_PNG  req/s and p99 of read-path.json's rows side by side
"""

import json
import os
import socket
import statistics
import sys
import time

CHUNK = 1000


def key(i):
    return "k:%012d" % i


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Resp:
    """A tiny blocking RESP2 client: enough for MGET replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("connection closed")
            self.buf += data
        value, self.buf = self.buf[:n], self.buf[n + 2:]
        return value

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode(errors="replace"))
        raise RuntimeError("unexpected reply %r" % line)

    def mget(self, keys):
        self.sock.sendall(encode("MGET", *keys))
        return self.reply()


def values(port, n):
    """Every key's value (bytes or None); a -TRYAGAIN etc. reads as all None for that chunk."""
    client = Resp(port)
    out = []
    for start in range(0, n, CHUNK):
        keys = [key(i) for i in range(start, min(n, start + CHUNK))]
        try:
            out.extend(client.mget(keys))
        except RuntimeError:
            out.extend([None] * len(keys))
    return out


def wait_loaded(port, n, timeout):
    deadline = time.time() + float(timeout)
    n = int(n)
    found = 0
    while time.time() < deadline:
        try:
            found = sum(v is not None for v in values(port, n))
        except (OSError, EOFError) as e:
            print("  (resp not answering yet: %s)" % e, file=sys.stderr)
            found = 0
        if found == n:
            return 0
        print("  %d/%d keys readable" % (found, n), file=sys.stderr)
        time.sleep(1)
    print("timed out: %d/%d keys readable" % (found, n), file=sys.stderr)
    return 1


def cpu_ticks(*pids):
    total = 0
    for pid in pids:
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        total += int(fields[11]) + int(fields[12])
    return total


def load_runs(runs_path):
    """Every recorded run, with its server CPU time per request (µs) added."""
    hz = os.sysconf("SC_CLK_TCK")
    runs = [json.loads(line) for line in open(runs_path) if line.strip()]
    for r in runs:
        r.setdefault("api", "resp")
        r["server_cpu_us_per_req"] = (
            r["server_cpu_ticks"] / hz * 1e6 / r["requests"] if r.get("server_cpu_ticks") is not None else None
        )
    return runs


def row_summary(rs):
    """Medians (and the req/s range) of the runs of one row."""
    def med(field):
        xs = [x[field] for x in rs if x.get(field) is not None]
        return statistics.median(xs) if xs else None

    return {
        "runs": len(rs),
        "rps_median": med("rps"),
        "rps_min": min(x["rps"] for x in rs),
        "rps_max": max(x["rps"] for x in rs),
        "avg_ms_median": med("avg_ms"),
        "p50_ms_median": med("p50_ms"),
        "p95_ms_median": med("p95_ms"),
        "p99_ms_median": med("p99_ms"),
        "max_ms_median": med("max_ms"),
        "server_cpu_us_per_req_median": med("server_cpu_us_per_req"),
        "errors": sum(x.get("errors", 0) for x in rs),
    }


def hello_streams_build(meta):
    """Which daemon the run measured, for the results' header line."""
    settings = meta.get("hello_streams_settings")
    return "hello-streams %s (binary built %s) with %s" % (
        meta.get("hello_streams_git", "?"),
        meta.get("hello_streams_bin_mtime", "?"),
        settings or "default settings",
    )


def summarize(runs_path, meta_path, out_json, out_md):
    runs = [r for r in load_runs(runs_path) if r["api"] == "resp"]
    meta = json.load(open(meta_path))
    groups = {}
    for r in runs:
        groups.setdefault((r["pipeline"], r["server"]), []).append(r)
    summary = []
    for (pipeline, server), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "redis")):
        summary.append(dict({"server": server, "pipeline": pipeline}, **row_summary(rs)))
    by = {(s["pipeline"], s["server"]): s for s in summary}
    for s in summary:
        base = by.get((s["pipeline"], "redis"))
        s["rps_vs_redis"] = s["rps_median"] / base["rps_median"] if base else None
    doc = {"meta": meta, "summary": summary, "runs": runs}
    with open(out_json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    lines = [
        "# redis-benchmark: hello-streams RESP vs Redis",
        "",
        "%s; %d keys; `redis-benchmark %s GET k:__rand_int__` (plus `-P %s` for the pipelined rows); "
        "median of %s runs per row, order alternated; %s CPUs; Redis %s; %s."
        % (
            meta["date"],
            meta["keys"],
            meta["flags"],
            meta["pipeline"],
            meta["runs"],
            meta["cpus"],
            meta["redis_version"],
            hello_streams_build(meta),
        ),
        "",
        "| pipeline | server | requests/s | vs Redis | p50 ms | p99 ms | avg ms | server CPU µs/req | requests/s per run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary:
        per_run = ", ".join(
            "%.0f" % x["rps"] for x in sorted(groups[(s["pipeline"], s["server"])], key=lambda x: x["run"])
        )
        cpu = s["server_cpu_us_per_req_median"]
        lines.append(
            "| %d | %s | %.0f | %.2f× | %.3f | %.3f | %.3f | %s | %s |"
            % (
                s["pipeline"],
                s["server"],
                s["rps_median"],
                s["rps_vs_redis"] or 0,
                s["p50_ms_median"],
                s["p99_ms_median"],
                s["avg_ms_median"],
                "%.2f" % cpu if cpu is not None else "n/a",
                per_run,
            )
        )
    if any(s["errors"] for s in summary):
        lines += ["", "Error replies seen: " + ", ".join("%s P%d: %d" % (s["server"], s["pipeline"], s["errors"]) for s in summary)]
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def http_get_json(port, path):
    """(status, decoded JSON body or None) of one GET over a fresh loopback connection."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        body = reply.read()
    finally:
        conn.close()
    try:
        return reply.status, json.loads(body)
    except ValueError:
        return reply.status, None


def same_http(hs_port, webdis_port, n, samples):
    """hello-streams' helloCount and webdis' GET value agree for the first and last key and
    SAMPLES random ones, every answer a 200."""
    import random

    n, samples = int(n), int(samples)
    picks = sorted({0, n - 1} | set(random.sample(range(n), min(n, samples))))
    bad = []
    for i in picks:
        hs_status, hs = http_get_json(hs_port, "/v1/state/" + key(i))
        wd_status, wd = http_get_json(webdis_port, "/GET/" + key(i))
        hs_value = str(hs.get("helloCount")) if isinstance(hs, dict) else None
        wd_value = wd.get("GET") if isinstance(wd, dict) else None
        if hs_status != 200 or wd_status != 200 or hs_value is None or hs_value != wd_value:
            bad.append("%s: hello-streams %s %r, webdis %s %r" % (key(i), hs_status, hs, wd_status, wd))
    if bad:
        print("%d of %d sampled keys differ over HTTP, e.g.\n  %s" % (len(bad), len(picks), "\n  ".join(bad[:5])), file=sys.stderr)
        return 1
    print("%d sampled keys answer 200 with the same value over both HTTP servers" % len(picks), file=sys.stderr)
    return 0


def record_wrk(out_path, run, server, ticks):
    """The WRK_JSON line that wrk-get.lua's done() prints, as one run record (latencies in ms,
    the same fields as a redis-benchmark record)."""
    lines = [line for line in open(out_path) if line.startswith("WRK_JSON ")]
    if len(lines) != 1:
        print("expected one WRK_JSON line in %s" % out_path, file=sys.stderr)
        return 1
    w = json.loads(lines[0].split(" ", 1)[1])
    errors = sum(w["errors_" + kind] for kind in ("connect", "read", "write", "status", "timeout"))
    ms = lambda f: w[f] / 1000.0
    print(
        json.dumps(
            {
                "run": int(run),
                "api": "http",
                "server": server,
                "pipeline": 1,
                "requests": w["requests"],
                "duration_s": w["duration_us"] / 1e6,
                "rps": w["rps"],
                "avg_ms": ms("avg_us"),
                "min_ms": ms("min_us"),
                "p50_ms": ms("p50_us"),
                "p90_ms": ms("p90_us"),
                "p95_ms": ms("p95_us"),
                "p99_ms": ms("p99_us"),
                "p999_ms": ms("p999_us"),
                "max_ms": ms("max_us"),
                "server_cpu_ticks": int(ticks),
                "errors": errors,
                "wrk_errors": {k[len("errors_"):]: v for k, v in w.items() if k.startswith("errors_")},
            }
        )
    )
    return 0


# The rows of read-path.{json,md} in table order: (id, api, server, pipeline or None for the
# configured one, label, baseline row id).
READ_PATH_ROWS = [
    ("http-webdis", "http", "webdis+redis", 1, "webdis + Redis, HTTP", None),
    ("http-hello-streams", "http", "hello-streams", 1, "hello-streams, HTTP", "http-webdis"),
    ("resp-p1-redis", "resp", "redis", 1, "Redis, RESP P1", None),
    ("resp-p1-hello-streams", "resp", "hello-streams", 1, "hello-streams, RESP P1", "resp-p1-redis"),
    ("resp-pN-redis", "resp", "redis", None, "Redis, RESP P%d", None),
    ("resp-pN-hello-streams", "resp", "hello-streams", None, "hello-streams, RESP P%d", "resp-pN-redis"),
]


def read_path_goals(rows, runs, pipelines):
    """The goals of issue 11, item 4, each evaluated on this run's numbers."""
    by = {r["id"]: r for r in rows}
    goals = []
    hs, wd = by["http-hello-streams"], by["http-webdis"]
    rps_ratio = hs["rps_median"] / wd["rps_median"]
    p99_ratio = hs["p99_ms_median"] / wd["p99_ms_median"]
    goals.append(
        {
            "goal": "HTTP: hello-streams >= 2x webdis+Redis req/s with <= 1/2 its p99 (medians)",
            "met": rps_ratio >= 2.0 and p99_ratio <= 0.5,
            "detail": "req/s %.0f vs %.0f (%.2fx); p99 %.3f vs %.3f ms (%.2fx)"
            % (hs["rps_median"], wd["rps_median"], rps_ratio, hs["p99_ms_median"], wd["p99_ms_median"], p99_ratio),
        }
    )
    resp = {(r["run"], r["pipeline"], r["server"]): r for r in runs if r["api"] == "resp"}
    pairs = sorted(
        (run, p, resp[(run, p, "hello-streams")]["rps"] / resp[(run, p, "redis")]["rps"])
        for (run, p, server) in resp
        if server == "redis" and (run, p, "hello-streams") in resp
    )
    worst = min(pairs, key=lambda x: x[2])
    goals.append(
        {
            "goal": "RESP: hello-streams >= 1.0x Redis req/s in every row and round (P1 and P%d)" % pipelines,
            "met": all(ratio >= 1.0 for _, _, ratio in pairs),
            "worst": {"run": worst[0], "pipeline": worst[1], "ratio": worst[2]},
            "detail": "per round (run/pipeline: ratio): "
            + ", ".join("%d/P%d: %.2fx" % pair for pair in pairs)
            + "; worst %.2fx" % worst[2],
        }
    )
    cpu = []
    for hs_id in ("http-hello-streams", "resp-p1-hello-streams", "resp-pN-hello-streams"):
        row = by[hs_id]
        base = by[row["baseline"]]
        cpu.append((row, base, row["server_cpu_us_per_req_median"] <= base["server_cpu_us_per_req_median"]))
    goals.append(
        {
            "goal": "server CPU per request: hello-streams <= webdis+Redis (HTTP) and <= Redis (RESP rows) (medians)",
            "met": all(ok for _, _, ok in cpu),
            "detail": "; ".join(
                "%s %.2f vs %.2f µs" % (row["label"].split(", ")[1], row["server_cpu_us_per_req_median"], base["server_cpu_us_per_req_median"])
                for row, base, _ in cpu
            ),
        }
    )
    return goals


def read_path(runs_path, meta_path, out_json, out_md):
    runs = load_runs(runs_path)
    meta = json.load(open(meta_path))
    pipelines = int(meta["pipeline"])
    rows = []
    for row_id, api, server, pipeline, label, baseline in READ_PATH_ROWS:
        pipeline = pipeline or pipelines
        rs = [r for r in runs if (r["api"], r["server"], r["pipeline"]) == (api, server, pipeline)]
        if not rs:
            print("no runs for row %s" % row_id, file=sys.stderr)
            return 1
        row = {"id": row_id, "api": api, "server": server, "pipeline": pipeline, "baseline": baseline}
        row["label"] = label % pipeline if "%d" in label else label
        row.update(row_summary(rs))
        row["rps_per_run"] = [x["rps"] for x in sorted(rs, key=lambda x: x["run"])]
        rows.append(row)
    by = {r["id"]: r for r in rows}
    for r in rows:
        base = by[r["baseline"]] if r["baseline"] else r
        r["rps_ratio"] = r["rps_median"] / base["rps_median"]
        r["p99_ratio"] = r["p99_ms_median"] / base["p99_ms_median"]
    goals = read_path_goals(rows, runs, pipelines)
    doc = {"meta": meta, "rows": rows, "goals": goals, "runs": runs}
    with open(out_json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    mark = lambda ok: "MET" if ok else "NOT MET"
    errors = sum(r["errors"] for r in rows)
    lines = [
        "# Read path: hello-streams vs Redis, over HTTP and over RESP",
        "",
        "%s; %d keys loaded through Kafka into one hello-streams daemon and the same values into one Redis %s; "
        "%d runs per row (medians; req/s range in brackets), the order of each pair alternated; %s CPUs shared by "
        "clients and servers; %s."
        % (meta["date"], meta["keys"], meta["redis_version"], meta["runs"], meta["cpus"], hello_streams_build(meta)),
        "",
        "- HTTP rows: `wrk %s -s bench/redis/wrk-get.lua` (wrk %s), a random key of the %d per request: "
        "`GET /v1/state/k:…` on hello-streams' HTTP port, `GET /GET/k:…` on webdis %s (%s) in front of the same Redis."
        % (meta["wrk_flags"], meta["wrk_version"], meta["keys"], meta["webdis_version"], meta["webdis_config"]),
        "- RESP rows: `redis-benchmark %s GET k:__rand_int__`, P%d adding `-P %d`."
        % (meta["flags"], pipelines, pipelines),
        "- CPU µs/request: utime+stime of the server processes over the timed call (webdis + redis-server for the "
        "webdis row) divided by the requests served. Latencies are each tool's own (wrk's or redis-benchmark's), "
        "so compare within a protocol.",
        "",
        "| row | req/s median (min–max) | p50 ms | p99 ms | CPU µs/request | ratio (req/s; p99) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "baseline" if not r["baseline"] else "%.2f×; %.2f×" % (r["rps_ratio"], r["p99_ratio"])
        lines.append(
            "| %s | %.0f (%.0f–%.0f) | %.3f | %.3f | %.2f | %s |"
            % (
                r["label"],
                r["rps_median"],
                r["rps_min"],
                r["rps_max"],
                r["p50_ms_median"],
                r["p99_ms_median"],
                r["server_cpu_us_per_req_median"],
                ratio,
            )
        )
    lines += ["", "Errors (wrk: connect/read/write/timeout/status >= 400; redis-benchmark: error lines): %d." % errors, ""]
    lines += ["## Goals (issue 11, item 4), from this run", ""]
    lines += ["- **%s**: %s — %s." % (mark(g["met"]), g["goal"], g["detail"]) for g in goals]
    hs_http, wd_http = by["http-hello-streams"], by["http-webdis"]
    hs_p1, hs_pn = by["resp-p1-hello-streams"], by["resp-pN-hello-streams"]
    resp_goal = goals[1]
    lines += [
        "",
        "![req/s and p99 per row](read-path.png)",
        "",
        "## Read path (for BENCHMARKS.md)",
        "",
        "The read path as users would build it: a key's state over HTTP from hello-streams' own API against "
        "webdis (an HTTP front end for Redis) in front of a Redis holding the same values, and over RESP against "
        "Redis itself (`bench/redis/compare`, %s, %d keys, %d rounds, medians). Over HTTP hello-streams served "
        "%.0f req/s against webdis+Redis' %.0f (%.2f×) with p99 %.3f vs %.3f ms, at %.2f vs %.2f µs of server "
        "CPU per request (webdis and redis-server together). Over RESP it served %.2f× Redis' req/s without "
        "pipelining and %.2f× with `-P %d` (medians; the worst single round %.2f×, run %d P%d), at %.2f vs %.2f and %.2f vs %.2f µs of "
        "CPU per request. Goals: %s. Full table, per-run numbers and the chart: "
        "`bench/results/read-path.{md,json,png}`."
        % (
            meta["date"],
            meta["keys"],
            meta["runs"],
            hs_http["rps_median"],
            wd_http["rps_median"],
            hs_http["rps_ratio"],
            hs_http["p99_ms_median"],
            wd_http["p99_ms_median"],
            hs_http["server_cpu_us_per_req_median"],
            wd_http["server_cpu_us_per_req_median"],
            hs_p1["rps_ratio"],
            hs_pn["rps_ratio"],
            pipelines,
            resp_goal["worst"]["ratio"],
            resp_goal["worst"]["run"],
            resp_goal["worst"]["pipeline"],
            hs_p1["server_cpu_us_per_req_median"],
            by["resp-p1-redis"]["server_cpu_us_per_req_median"],
            hs_pn["server_cpu_us_per_req_median"],
            by["resp-pN-redis"]["server_cpu_us_per_req_median"],
            "; ".join("%s %s" % (g["goal"].split(":")[0], mark(g["met"])) for g in goals),
        ),
    ]
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def chart(read_path_json, out_png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    doc = json.load(open(read_path_json))
    rows = doc["rows"]
    labels = [r["label"].replace(", ", "\n") for r in rows]
    colors = ["#4c72b0" if r["server"] == "hello-streams" else "#c44e52" for r in rows]
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(13, 5))
    ys = range(len(rows))
    rps = [r["rps_median"] / 1000 for r in rows]
    err = [
        [(r["rps_median"] - r["rps_min"]) / 1000 for r in rows],
        [(r["rps_max"] - r["rps_median"]) / 1000 for r in rows],
    ]
    ax_rps.barh(ys, rps, xerr=err, color=colors, capsize=3)
    ax_rps.set_xscale("log")
    ax_rps.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    ax_rps.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: "%g" % v))
    ax_rps.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_rps.set_xlabel("thousand requests/s (median, min–max; log scale)")
    ax_rps.set_title("throughput")
    ax_p99.barh(ys, [r["p99_ms_median"] for r in rows], color=colors)
    ax_p99.set_xlabel("p99 latency, ms (median of the runs)")
    ax_p99.set_title("p99 latency")
    p99 = [r["p99_ms_median"] for r in rows]
    # Each label right of its bar's end (the error bar's, for req/s).
    for ax, values, ends, fmt in ((ax_rps, rps, [r["rps_max"] / 1000 for r in rows], "%.1f k"), (ax_p99, p99, p99, "%.2f ms")):
        ax.set_yticks(list(ys))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        for y, v, end in zip(ys, values, ends):
            ax.annotate(fmt % v, (end, y), xytext=(5, 0), textcoords="offset points", va="center", fontsize=8)
        ax.margins(x=0.2)
    meta = doc["meta"]
    fig.suptitle(
        "Read path, %s: HTTP (wrk %s) and RESP (redis-benchmark -c %s), %s keys, %s CPUs"
        % (meta["date"], meta["wrk_flags"], meta["clients"], meta["keys"], meta["cpus"]),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "keys-file":
        n, path = int(args[0]), args[1]
        with open(path, "w") as f:
            for i in range(n):
                f.write("%s|Hello\n" % key(i))
        return 0
    if cmd == "wait-loaded":
        return wait_loaded(*args)
    if cmd == "dump":
        port, n, path = args[0], int(args[1]), args[2]
        vs = values(port, n)
        missing = sum(v is None for v in vs)
        if missing:
            print("%d keys have no value" % missing, file=sys.stderr)
            return 1
        with open(path, "w") as f:
            for i, v in enumerate(vs):
                f.write("%s %s\n" % (key(i), v.decode()))
        return 0
    if cmd == "redis-proto":
        src, path = args
        with open(src) as f, open(path, "wb") as out:
            for line in f:
                k, v = line.split()
                out.write(encode("SET", k, v))
        return 0
    if cmd == "same":
        a, b, n = args[0], args[1], int(args[2])
        va, vb = values(a, n), values(b, n)
        diff = [key(i) for i in range(n) if va[i] != vb[i] or va[i] is None]
        if diff:
            print("%d keys differ, e.g. %s" % (len(diff), diff[:5]), file=sys.stderr)
            return 1
        return 0
    if cmd == "record":
        # record CSV_FILE RUN SERVER PIPELINE REQUESTS CPU_TICKS ERRORS  -> one JSON line on stdout
        csv_path, run, server, pipeline, requests, ticks, errors = args
        import csv

        rows = [r for r in csv.reader(open(csv_path)) if r and r[0] != "test"]
        if len(rows) != 1:
            print("expected one CSV row in %s, got %r" % (csv_path, rows), file=sys.stderr)
            return 1
        r = rows[0]
        print(
            json.dumps(
                {
                    "run": int(run),
                    "api": "resp",
                    "server": server,
                    "pipeline": int(pipeline),
                    "requests": int(requests),
                    "rps": float(r[1]),
                    "avg_ms": float(r[2]),
                    "min_ms": float(r[3]),
                    "p50_ms": float(r[4]),
                    "p95_ms": float(r[5]),
                    "p99_ms": float(r[6]),
                    "max_ms": float(r[7]),
                    "server_cpu_ticks": int(ticks),
                    "errors": int(errors),
                }
            )
        )
        return 0
    if cmd == "cpu-ticks":
        print(cpu_ticks(*args))
        return 0
    if cmd == "same-http":
        return same_http(*args)
    if cmd == "record-wrk":
        return record_wrk(*args)
    if cmd == "summarize":
        return summarize(*args)
    if cmd == "read-path":
        return read_path(*args)
    if cmd == "chart":
        return chart(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
