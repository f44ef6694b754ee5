"""The systems under test, as processes the driver starts, watches and stops by pid: hello-streams
and the Kafka Streams reference, once with the classic group protocol and once with the
streams rebalance protocol (KIP-1071)."""

from __future__ import annotations

import os
import glob
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from progress import say

# A driver killed mid-run (SIGKILL, a closed terminal) must not leave a system running:
# setpriv (util-linux) makes the kernel send it SIGTERM when the driver's thread that started
# it dies. Both systems go through it, so they pay the same few microseconds of exec.
_SETPRIV = shutil.which("setpriv")


def tied_to_driver(cmd: list[str]) -> list[str]:
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *cmd] if _SETPRIV else cmd


CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_usage(pid: int) -> tuple[float, float, float]:
    """(CPU seconds user+system, peak RSS MiB (VmHWM), current RSS MiB) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    hwm = rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return cpu, hwm, rss


def broker_cpu_seconds() -> float:
    """CPU seconds of every local Kafka broker process (java ... kafka.Kafka ...), from /proc."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"kafka.Kafka\0" not in f.read():
                    continue
            total += proc_usage(int(pid))[0]
        except (OSError, ValueError, IndexError):
            continue
    return total


def _jar_property(jar: str, entry: str, key: str = "version") -> str | None:
    try:
        with zipfile.ZipFile(jar) as z:
            for line in z.read(entry).decode(errors="replace").splitlines():
                if line.startswith(key + "="):
                    return line.split("=", 1)[1].strip()
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    return None


def broker_version() -> dict:
    """The version of the local broker(s): kafka/kafka-version.properties inside the kafka-server
    (or kafka_2.13) jar on the class path of the running java ... kafka.Kafka process, from /proc.
    Robust to how the broker was started (class path globs, a tarball, kafka/local-kafka)."""
    found: dict = {}
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if "kafka.Kafka" not in argv:
            continue
        cp = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-cp", "-classpath", "--class-path")), "")
        jars = [j for entry in cp.split(":") for j in (sorted(glob.glob(entry)) if "*" in entry else [entry])]
        for pattern in (r"kafka-server-(\d[^/]*)\.jar$", r"kafka_2\.\d+-(\d[^/]*?)(?:-\w+)?\.jar$",
                        r"kafka-clients-(\d[^/]*)\.jar$"):
            jar = next((j for j in jars if re.search(pattern, j)), None)
            if jar:
                version = _jar_property(jar, "kafka/kafka-version.properties") or re.search(pattern, jar).group(1)
                found.setdefault("version", version)
                found.setdefault("source", f"{os.path.basename(jar)} on the class path of broker pid {pid}")
                break
        found.setdefault("pids", []).append(int(pid))
    return found or {"version": None, "source": "no local java ... kafka.Kafka process found"}


def jar_manifest_classpath(jar: Path) -> list[Path]:
    """The Class-Path entries of a jar's manifest, resolved against the jar's directory."""
    try:
        with zipfile.ZipFile(jar) as z:
            text = z.read("META-INF/MANIFEST.MF").decode(errors="replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return []
    joined = re.sub(r"\r?\n ", "", text)  # manifest continuation lines
    for line in joined.splitlines():
        if line.startswith("Class-Path:"):
            return [jar.parent / e for e in line.split(":", 1)[1].split()]
    return []


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


@dataclass
class Proc:
    popen: subprocess.Popen
    log_path: Path
    started: float
    http_port: int = 0
    lines: list[tuple[float, str]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def usage(self) -> tuple[float, float, float]:
        return proc_usage(self.pid)

    def log_tail(self, n: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            text = []
        out = [line for _, line in self.lines[-n:]]
        return "\n".join(out + text)

    def terminate(self, timeout: float = 60) -> tuple[float, bool]:
        """SIGTERM, wait; SIGKILL after `timeout`. Returns (seconds, stopped cleanly)."""
        t0 = time.monotonic()
        if self.popen.poll() is not None:
            return 0.0, True
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
            return time.monotonic() - t0, True
        except subprocess.TimeoutExpired:
            self.kill9()
            return time.monotonic() - t0, False

    def kill9(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(30)


class SystemUnderTest:
    name = ""
    short = ""

    def prepare(self, app_id: str) -> None:
        """Called before the first start of an application id (group-level settings)."""

    def group_members(self, kafka, group: str) -> int:
        """Members of the application's group, to wait for the broker to expire a killed one."""
        return kafka.group_members(group)

    def runtime_info(self, proc: "Proc") -> dict:
        """What the running process reported about itself (versions, effective settings)."""
        return {}

    def forget(self, app_id: str) -> None:
        """Removes what prepare() set for an application id."""

    def __init__(self, bootstrap: str, partitions: int):
        self.bootstrap = bootstrap
        self.partitions = partitions

    @staticmethod
    def changelog(app_id: str) -> str:
        # Both name it the Kafka Streams way: <application.id>-<store>-changelog.
        return f"{app_id}-hello-store-changelog"

    def internal_topics(self, app_id: str) -> list[str]:
        return [self.changelog(app_id)]

    def wait_ready(self, proc: Proc, timeout: float) -> tuple[float, dict]:
        raise NotImplementedError

    def _check_alive(self, proc: Proc) -> None:
        if not proc.alive():
            raise RuntimeError(f"{self.name} exited with status {proc.popen.returncode}; log:\n{proc.log_tail()}")


class HelloStreams(SystemUnderTest):
    name = "hello-streams"
    short = "hs"

    def __init__(self, bootstrap: str, partitions: int, binary: Path, threads: int, log_filter: str = "warn",
                 settings: list[str] | None = None, windows: bool = False):
        super().__init__(bootstrap, partitions)
        # The comparison with Kafka Streams runs the same work on both sides, the key/value fold;
        # the windowed fold (a second store, changelog and output record per event) is its own row.
        self.windows = windows
        if windows:
            self.name, self.short = "hello-streams + windows", "hsw"
        self.settings = [f"windows.enabled={str(windows).lower()}", *(settings or [])]
        self.binary = binary
        self.threads = threads
        self.log_filter = log_filter

    def internal_topics(self, app_id: str) -> list[str]:
        # The changelogs and the compacted topic where instances announce their partitions.
        windows = [f"{app_id}-hello-windows-changelog"] if self.windows else []
        return [self.changelog(app_id), *windows, f"{app_id}-owners"]

    def describe(self) -> dict:
        version = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True).stdout.strip()
        idle = "app.commit_when_idle=false" not in self.settings
        return {"binary": str(self.binary), "version": version, "processing_guarantee": "exactly_once",
                "commit_interval_ms": 100, "commit_when_idle": idle,
                "commit": "as soon as caught up with the input, at most every 100 ms" if idle else "every 100 ms",
                "settings": self.settings, "stream_threads": self.threads, "state_store": "RocksDB + changelog",
                "windows": ("1-minute tumbling windows by event time: a second store, changelog and output record "
                            "per event") if self.windows else "off (the same work as Kafka Streams: the key/value fold)",
                "group_protocol": "own partition ownership (compacted <app>-owners topic), classic consumer group "
                                  "for the input", "session_timeout_ms": 10000,
                "dlq": "own (dead letter written in the transaction of its input offset)", "cache": "read cache "
                "(state writes go to the changelog at once)"}

    def start(self, app_id: str, topics: dict[str, str], state_dir: Path, log_path: Path) -> Proc:
        http, resp = free_port(), free_port()
        cmd = [str(self.binary), "run", "--bootstrap-servers", self.bootstrap, "--application-id", app_id,
               "--state-dir", str(state_dir), "--http-addr", f"127.0.0.1:{http}", "--resp-addr", f"127.0.0.1:{resp}",
               "--set", f"topics.input={topics['input']}", "--set", f"topics.output={topics['output']}",
               "--set", f"topics.dlq={topics['dlq']}", "--set", f"topics.windows={topics['input']}-windows",
               "--set", f"topics.partitions={self.partitions}",
               "--set", f"app.stream_threads={self.threads}", "--set", f"log.filter={self.log_filter}",
               *(a for kv in self.settings for a in ("--set", kv))]
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG" and not k.startswith("HELLO_STREAMS__")}
        log = open(log_path, "ab")
        started = time.monotonic()
        popen = subprocess.Popen(tied_to_driver(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 cwd=state_dir.parent)
        log.close()
        return Proc(popen, log_path, started, http_port=http)

    @staticmethod
    def _get(port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def metrics(self, proc: Proc) -> dict[str, float]:
        status, body = self._get(proc.http_port, "/metrics")
        out = {}
        for line in body.splitlines():
            m = re.match(r"^(hello_streams_[a-z_]+)(?:\{[^}]*\})?\s+([-0-9.eE+naNinf]+)$", line)
            if m:
                try:
                    out[m.group(1)] = float(m.group(2))
                except ValueError:
                    pass
        return out

    def wait_ready(self, proc: Proc, timeout: float) -> tuple[float, dict]:
        """Ready: /readyz answers 200 AND all P partitions are active tasks (no restoring one).

        /readyz alone also answers 200 before the first assignment (no partition restoring yet),
        so the driver also requires hello_streams_active_tasks == P."""
        deadline = proc.started + timeout
        last_say = time.monotonic()
        while time.monotonic() < deadline:
            self._check_alive(proc)
            status, _ = self._get(proc.http_port, "/readyz")
            if status == 200:
                now = time.monotonic()
                m = self.metrics(proc)
                if m.get("hello_streams_active_tasks") == self.partitions and m.get("hello_streams_restoring_tasks", 0) == 0:
                    return now, {"restored": int(m.get("hello_streams_restore_total", 0)),
                                 "restore_rate_reported": m.get("hello_streams_restore_rate")}
            if time.monotonic() - last_say >= 3:
                last_say = time.monotonic()
                m = self.metrics(proc)
                say(f"    waiting for {self.name} to be ready ({last_say - proc.started:.0f}s): /readyz {status}, "
                    f"{m.get('hello_streams_active_tasks', 0):.0f} active and "
                    f"{m.get('hello_streams_restoring_tasks', 0):.0f} restoring partitions, "
                    f"{m.get('hello_streams_restore_total', 0):,.0f} records restored")
            # Kafka Streams' readiness is a stdout line seen at once; poll often enough to be as exact.
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s; log:\n{proc.log_tail()}")


# Why the reference keeps its own dead-letter sink instead of Kafka Streams' native DLQ
# (KIP-1034, errors.dead.letter.queue.topic.name, Kafka Streams 4.2+); recorded in describe().
NATIVE_DLQ_NOT_USED = (
    "native DLQ (errors.dead.letter.queue.topic.name) not used: it is fed only by the exception handlers "
    "(deserialization, processing, production), so every poison record would have to be thrown as an "
    "exception from the processor, and the handler writes the raw source record with __streams.errors.* "
    "headers (exception class, message, stack trace, topic, partition, offset) instead of hello-streams' "
    "error.kind/error.message/source.*/original.size/truncated headers and 16 KiB value truncation. Same "
    "topic, count and transaction could be kept, the dead letters themselves would not be the same, so "
    "the reference forwards them to its own DLQ sink in the same exactly-once transaction")


class KafkaStreamsReference(SystemUnderTest):
    """The Kafka Streams reference app: exactly_once_v2 + transactional state stores, with the
    classic group protocol (short "ks") or the streams rebalance protocol (short "ksp",
    group.protocol=streams, KIP-1071)."""

    SESSION_TIMEOUT_MS = 10_000  # the reference's default consumer session.timeout.ms (classic)

    def __init__(self, bootstrap: str, partitions: int, build_dir: Path, threads: int, java_opts: list[str],
                 log_level: str = "warn", group_protocol: str = "classic", repo: Path | None = None):
        super().__init__(bootstrap, partitions)
        self.log_level = log_level
        self.jar = build_dir / "hello-kstreams-reference.jar"
        self.threads = threads
        self.java = shutil.which("java") or "java"
        if os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin/java").exists():
            self.java = str(Path(os.environ["JAVA_HOME"], "bin/java"))
        self.java_opts = java_opts
        self.group_protocol = group_protocol
        self.repo = repo
        self.short = "ks" if group_protocol == "classic" else "ksp"
        self.name = "Kafka Streams" if group_protocol == "classic" else "Kafka Streams (streams protocol)"
        # Group-level settings the driver sets on a streams group before its first start.
        self.group_config = {"streams.initial.rebalance.delay.ms": "0"} if group_protocol == "streams" else {}

    def kafka_streams_jar(self) -> Path | None:
        return next((p for p in jar_manifest_classpath(self.jar) if re.match(r"kafka-streams-\d", p.name)), None)

    def _broker_group_settings(self) -> dict:
        """The broker's group.streams.* settings that decide a streams group's timeouts."""
        from confluent_kafka.admin import AdminClient, ConfigResource

        try:
            admin = AdminClient({"bootstrap.servers": self.bootstrap})
            brokers = admin.list_topics(timeout=10).brokers
            res = ConfigResource("BROKER", str(min(brokers)))
            cfg = admin.describe_configs([res])[res].result(timeout=15)
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            return {"error": str(e)}
        keys = ("group.coordinator.rebalance.protocols", "group.streams.session.timeout.ms",
                "group.streams.min.session.timeout.ms", "group.streams.heartbeat.interval.ms",
                "group.streams.min.heartbeat.interval.ms", "group.streams.initial.rebalance.delay.ms",
                "group.initial.rebalance.delay.ms")
        return {k: cfg[k].value for k in keys if k in cfg}

    def describe(self) -> dict:
        v = subprocess.run([self.java, "-version"], capture_output=True, text=True).stderr.splitlines()
        ks_jar = self.kafka_streams_jar()
        ks_version = _jar_property(str(ks_jar), "kafka/kafka-streams-version.properties") if ks_jar else None
        out = {"jar": str(self.jar), "java": v[0] if v else "", "java_opts": self.java_opts,
               "kafka_streams": ks_version or "unknown",
               "kafka_streams_jar": ks_jar.name if ks_jar else None,
               "num_stream_threads": self.threads, "stream_threads": self.threads,
               "processing_guarantee": "exactly_once_v2", "transactional_state_stores": True,
               "state_store": "RocksDB + changelog", "statestore_cache_max_bytes": 0, "cache": "record cache off "
               "(statestore.cache.max.bytes=0)", "commit_interval_ms": 100,
               "group_protocol": self.group_protocol,
               "dlq": "own DLQ sink of the processor (same transaction)", "dlq_native_not_used": NATIVE_DLQ_NOT_USED}
        if self.group_protocol == "classic":
            out["session_timeout_ms"] = self.SESSION_TIMEOUT_MS
            out["heartbeat_interval_ms"] = max(500, self.SESSION_TIMEOUT_MS // 4)
            out["timeouts_from"] = "consumer session.timeout.ms / heartbeat.interval.ms set by the reference"
        else:
            broker = self._broker_group_settings()
            out["broker_group_settings"] = broker
            out["group_config"] = self.group_config
            out["session_timeout_ms"] = int(broker.get("group.streams.session.timeout.ms") or 45000)
            out["heartbeat_interval_ms"] = int(broker.get("group.streams.heartbeat.interval.ms") or 5000)
            out["timeouts_from"] = ("the broker (group.streams.session.timeout.ms / heartbeat.interval.ms): with "
                                    "group.protocol=streams the consumer's session.timeout.ms/heartbeat.interval.ms "
                                    "are accepted but not used, so the reference does not set them; the broker's "
                                    "group.streams.min.session.timeout.ms keeps a group-level "
                                    "streams.session.timeout.ms from going lower")
        return out

    def prepare(self, app_id: str) -> None:
        if not self.group_config:
            return
        from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        res = ConfigResource("GROUP", app_id, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in self.group_config.items()])
        for _, f in admin.incremental_alter_configs([res]).items():
            f.result(timeout=30)

    def runtime_info(self, proc: Proc) -> dict:
        for _, line in list(proc.lines):
            if line.startswith("KSTREAMS STARTING"):
                return dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
        return {}

    def forget(self, app_id: str) -> None:
        if not self.group_config:
            return
        from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        res = ConfigResource("GROUP", app_id, incremental_configs=[
            ConfigEntry(k, "", incremental_operation=AlterConfigOpType.DELETE) for k in self.group_config])
        for _, f in admin.incremental_alter_configs([res]).items():
            try:
                f.result(timeout=30)
            except Exception:  # noqa: BLE001 - cleanup only
                pass

    def group_members(self, kafka, group: str) -> int:
        if self.group_protocol == "classic":
            return kafka.group_members(group)
        # A streams group is not a consumer group: confluent-kafka cannot describe it, Kafka's
        # kafka-streams-groups tool (StreamsGroupCommand) can.
        lib = (self.repo or Path(__file__).resolve().parents[2]) / "kafka/lib.sh"
        p = subprocess.run(["bash", "-c", 'source "$0"; hs_kafka_tool org.apache.kafka.tools.streams.StreamsGroupCommand '
                            '--bootstrap-server "$1" --describe --group "$2" --members', str(lib), self.bootstrap,
                            group], capture_output=True, text=True, timeout=60)
        rows = [line for line in p.stdout.splitlines() if line.strip() and not line.startswith("GROUP ")]
        return sum(1 for line in rows if line.split()[0] == group)

    def start(self, app_id: str, topics: dict[str, str], state_dir: Path, log_path: Path) -> Proc:
        cmd = [self.java, *self.java_opts, "-jar", str(self.jar), "--bootstrap-servers", self.bootstrap,
               "--application-id", app_id, "--input", topics["input"], "--output", topics["output"],
               "--dlq", topics["dlq"], "--state-dir", str(state_dir), "--threads", str(self.threads),
               "--log-file", str(log_path), "--log-level", self.log_level]
        if self.group_protocol != "classic":
            cmd += ["--config", f"group.protocol={self.group_protocol}"]
        started = time.monotonic()
        popen = subprocess.Popen(tied_to_driver(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, bufsize=1, cwd=state_dir.parent)
        proc = Proc(popen, log_path, started)

        def pump():
            for line in popen.stdout:
                with proc.cond:
                    proc.lines.append((time.monotonic(), line.rstrip("\n")))
                    proc.cond.notify_all()
            with proc.cond:
                proc.cond.notify_all()

        threading.Thread(target=pump, daemon=True).start()
        return proc

    def wait_ready(self, proc: Proc, timeout: float) -> tuple[float, dict]:
        """Ready: the first "KSTREAMS RUNNING" line (all tasks assigned and restored)."""
        deadline = proc.started + timeout
        seen = 0
        last_say = time.monotonic()
        with proc.cond:
            while True:
                for t, line in proc.lines[seen:]:
                    if line.startswith("KSTREAMS RUNNING"):
                        info = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
                        return t, {"restored": int(info.get("restored", 0)),
                                   "restore_ms_reported": int(info.get("restore_ms", 0))}
                    if line.startswith("KSTREAMS ERROR"):
                        raise RuntimeError(f"{self.name} failed: {line}\n{proc.log_tail()}")
                seen = len(proc.lines)
                if not proc.alive() and seen == len(proc.lines):
                    raise RuntimeError(f"{self.name} exited with status {proc.popen.poll()}; output:\n{proc.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name} not RUNNING within {timeout:.0f}s; output:\n{proc.log_tail()}")
                proc.cond.wait(min(left, 0.5))
                if time.monotonic() - last_say >= 3:
                    last_say = time.monotonic()
                    latest = proc.lines[-1][1] if proc.lines else "(no output yet)"
                    say(f"    waiting for {self.name} to be RUNNING ({last_say - proc.started:.0f}s); last: {latest}")
