#!/usr/bin/env python3
"""Helpers of bench/redis/compare (standard library only).

Subcommands:
  keys-file N PATH             write N lines "k:<12 digits>|Hello" (kafka-console-producer input)
  wait-loaded PORT N TIMEOUT   poll MGET over RESP until all N keys answer a number
  dump PORT N PATH             write every key's GET value (MGET over RESP) as "key value" lines
  redis-proto VALUES PATH      turn "key value" lines into a RESP SET stream for redis-cli --pipe
  same PORT_A PORT_B N         check that two servers answer every key with the same value
  cpu-ticks PID                utime+stime of a process, in clock ticks
  record CSV RUN SERVER P N TICKS ERRORS   one redis-benchmark --csv result as a JSON line
  summarize RUNS_JSONL META_JSON OUT_JSON OUT_MD
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


def cpu_ticks(pid):
    with open("/proc/%s/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def summarize(runs_path, meta_path, out_json, out_md):
    runs = [json.loads(line) for line in open(runs_path) if line.strip()]
    meta = json.load(open(meta_path))
    hz = os.sysconf("SC_CLK_TCK")
    groups = {}
    for r in runs:
        r["server_cpu_us_per_req"] = (
            r["server_cpu_ticks"] / hz * 1e6 / r["requests"] if r.get("server_cpu_ticks") is not None else None
        )
        groups.setdefault((r["pipeline"], r["server"]), []).append(r)
    summary = []
    for (pipeline, server), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "redis")):
        med = lambda f: statistics.median(x[f] for x in rs if x.get(f) is not None)
        summary.append(
            {
                "server": server,
                "pipeline": pipeline,
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
        )
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
        "median of %s runs per row, order alternated; %s CPUs; Redis %s; hello-streams %s (binary built %s)%s."
        % (
            meta["date"],
            meta["keys"],
            meta["flags"],
            meta["pipeline"],
            meta["runs"],
            meta["cpus"],
            meta["redis_version"],
            meta.get("hello_streams_git", "?"),
            meta.get("hello_streams_bin_mtime", "?"),
            " with " + meta["hello_streams_settings"] if meta.get("hello_streams_settings") else " with default settings",
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
        print(cpu_ticks(args[0]))
        return 0
    if cmd == "summarize":
        return summarize(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
