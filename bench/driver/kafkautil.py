"""Kafka plumbing for the driver: topics, a fast producer, committed-output readers."""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from progress import say


class Kafka:
    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def check(self, timeout: float = 10.0) -> None:
        self.admin.list_topics(timeout=timeout)

    def create_topics(self, names: list[str], partitions: int) -> None:
        futures = self.admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names], operation_timeout=30)
        for name, f in futures.items():
            f.result(timeout=60)
        # Wait until the metadata shows every partition with a leader.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = self.admin.list_topics(timeout=10).topics
            if all(n in md and len(md[n].partitions) == partitions and not md[n].error
                   and all(p.leader >= 0 for p in md[n].partitions.values()) for n in names):
                return
            time.sleep(0.2)
        raise RuntimeError(f"topics {names} did not become ready")

    def delete_topics(self, names: list[str]) -> None:
        existing = set(self.admin.list_topics(timeout=10).topics)
        names = [n for n in names if n in existing]
        if not names:
            return
        for _, f in self.admin.delete_topics(names, operation_timeout=30).items():
            try:
                f.result(timeout=60)
            except KafkaException as e:
                say(f"  (could not delete a topic: {e})")

    def delete_groups(self, groups: list[str]) -> None:
        if not groups:
            return
        for _, f in self.admin.delete_consumer_groups(groups, request_timeout=10).items():
            try:
                f.result(timeout=30)
            except KafkaException:
                pass  # absent or not empty: nothing to clean

    def group_members(self, group: str) -> int:
        """Members of a consumer group (0 when it is empty or unknown)."""
        try:
            desc = self.admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        except KafkaException:
            return 0
        return len(desc.members)

    def wait_group_empty(self, group: str, timeout: float, members: Callable[[str], int] | None = None) -> float:
        """Waits until the group has no members (the broker expired or removed them); seconds waited.
        `members` counts them (default: as a consumer group)."""
        start = time.monotonic()
        last_say = start
        while (members or self.group_members)(group) > 0:
            now = time.monotonic()
            if now - start > timeout:
                raise RuntimeError(f"consumer group {group} still has members after {timeout:.0f}s")
            if now - last_say > 3:
                last_say = now
                say(f"    waiting for the broker to expire the old member of {group} ({now - start:.0f}s)")
            time.sleep(0.25)
        return time.monotonic() - start

    # ---- producing ----

    def producer(self, linger_ms: int, extra: dict | None = None) -> Producer:
        return Producer({
            **(extra or {}),
            "bootstrap.servers": self.bootstrap,
            # The Java client's partitioner, so partition p of a key agrees with kafka-console-producer
            # and Kafka Streams' default sink partitioner.
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        })

    def warm_producer(self, topic: str, timeout: float = 30.0) -> Producer:
        """A producer ready to send at once, for timed feeding.

        A new idempotent producer holds its first records until it has the topic's metadata and
        a producer id: ~0.5-1 s after a fresh start. Event timestamps are taken at produce(),
        so that wait showed up as the latency phase's p99 (~500 ms) for both systems alike.
        """
        ready = threading.Event()

        def on_stats(text: str) -> None:
            if json.loads(text).get("eos", {}).get("idemp_state") == "Assigned":
                ready.set()

        # linger.ms 5 is the Java client's default since Kafka 4.0 (KIP-1030). With 1 ms the
        # feeder alone kept the broker 0.5 cores busy at 5,000 events/s (0.24 with 5), on the
        # two cores the systems under test share with it.
        p = self.producer(5, {"statistics.interval.ms": 50, "stats_cb": on_stats})
        p.list_topics(topic, timeout=timeout)
        deadline = time.monotonic() + timeout
        while not ready.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError(f"producer for {topic} got no producer id within {timeout:.0f}s")
            p.poll(0.01)
        return p

    def produce(self, topic: str, records: Callable[[int], tuple[bytes | None, bytes]], start: int, end: int,
                label: str, rate: float | None = None, linger_ms: int = 20) -> float:
        """Produces records(start..end) in order; paced at `rate` events/s when given. Returns seconds."""
        p = self.warm_producer(topic) if rate else self.producer(linger_ms)
        errors: list[str] = []

        def on_delivery(err, _msg):
            if err is not None and len(errors) < 5:
                errors.append(str(err))

        t0 = time.monotonic()
        last_say = t0
        produce = p.produce
        for i in range(start, end):
            key, value = records(i)
            while True:
                try:
                    produce(topic, value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.005)
            if rate:
                due = t0 + (i - start) / rate
                now = time.monotonic()
                if due > now:
                    p.poll(0)
                    time.sleep(due - now)
            elif (i & 0x3FFF) == 0:
                p.poll(0)
                now = time.monotonic()
                if now - last_say > 3:
                    last_say = now
                    say(f"    {label}: {i - start:,}/{end - start:,} produced")
        remaining = p.flush(120)
        if remaining or errors:
            raise RuntimeError(f"producing to {topic} failed: {remaining} undelivered, errors {errors}")
        return time.monotonic() - t0


class CommittedOffsets:
    """The input offsets a system's consumer group has committed, read without joining it.

    Both systems commit their input offsets inside the transaction that writes the outputs
    (exactly-once), so "every input offset committed" is the moment every output became
    visible. Watching that costs one small request per poll, where reading the outputs
    themselves cost the driver ~1 CPU second per million records on the same two cores as the
    system under test (and the broker as much again to serve the reads).
    """

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int):
        self.c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            # Offsets committed by an open transaction count only once it committed.
            "isolation.level": "read_committed",
        })
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def total(self, timeout: float = 5.0) -> int:
        """Sum over all partitions of the committed offsets (0 where none is committed yet)."""
        offsets = self.c.committed(self.partitions, timeout=timeout)
        return sum(max(tp.offset, 0) for tp in offsets)

    def end_total(self, timeout: float = 10.0) -> int:
        """Sum of the partitions' end offsets: the target of `total` once everything is done."""
        return sum(self.c.get_watermark_offsets(tp, timeout=timeout)[1] for tp in self.partitions)

    def close(self) -> None:
        self.c.close()


class CommittedReader:
    """A read_committed consumer of a whole topic from the beginning (no consumer group)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, tag: str):
        self.c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"{tag}-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 10,
            # It prefetches from offset 0 while the throughput phase runs unread, fills its queue,
            # and librdkafka then pauses that fetcher for fetch.queue.backoff.ms (1 s by default):
            # the first second of the latency phase waited it out, for every system alike.
            "fetch.queue.backoff.ms": 10,
            "enable.partition.eof": True,
        })
        self.c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.count = 0
        self.eof: set[int] = set()
        self.topic = topic
        self.partitions = partitions

    def skip_to_end(self, records: int, timeout: float = 10.0) -> None:
        """Goes on from the topic's current end, counting the `records` before it as read.

        For a phase whose outputs are all committed and are read in full by the correctness
        gate anyway: reading them here too only cost time (~5 s per million)."""
        ends = [self.c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)[1]
                for p in range(self.partitions)]
        self.c.assign([TopicPartition(self.topic, p, end) for p, end in enumerate(ends)])
        self.count = records
        self.eof.clear()

    def poll(self, timeout: float = 0.2, on_message: Callable | None = None) -> int:
        """Consumes what is available; returns how many records arrived."""
        got = 0
        for m in self.c.consume(num_messages=10_000, timeout=timeout):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.eof.add(m.partition())
                    continue
                raise KafkaException(err)
            self.eof.discard(m.partition())
            got += 1
            if on_message is not None:
                on_message(m)
        self.count += got
        return got

    def close(self) -> None:
        self.c.close()


def read_all(bootstrap: str, topic: str, partitions: int, tag: str, expected: int | None = None,
             timeout: float = 120) -> tuple[int, dict[bytes, bytes]]:
    """Reads a topic's committed records to its end: the count and the last value per key."""
    r = CommittedReader(bootstrap, topic, partitions, tag)
    last: dict[bytes, bytes] = {}
    deadline = time.monotonic() + timeout
    last_say = time.monotonic()

    def keep(m):
        last[m.key()] = m.value()

    try:
        while True:
            r.poll(0.5, keep)
            if len(r.eof) == partitions and (expected is None or r.count >= expected):
                # Every partition was at its end once after the last record: done.
                return r.count, last
            if time.monotonic() > deadline:
                return r.count, last
            if time.monotonic() - last_say > 3:
                last_say = time.monotonic()
                say(f"    reading {topic}: {r.count:,} records")
    finally:
        r.close()


class Background(threading.Thread):
    """Runs a function in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.result, self.error = fn, args, None, None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            self.error = e

    def get(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.result
