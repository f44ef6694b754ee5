package dev.hellostreams.kstreams;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams reference of hello-streams: the same fold, topic layout and output JSON,
 * under its own application.id, in Kafka Streams' best exactly-once configuration: exactly_once_v2
 * with transactional state stores (KIP-892), RocksDB store with a changelog, record cache off,
 * commit interval 100 ms. {@code --config group.protocol=streams} selects the broker-side
 * rebalance protocol (KIP-1071); the default is the classic one.
 *
 * <p>Standard output carries only machine-readable lines for the benchmark driver:
 * {@code KSTREAMS STARTING pid=N application.id=A kafka_streams=V group.protocol=P ...},
 * {@code KSTREAMS RESTORE-END topic-p records=N},
 * {@code KSTREAMS RUNNING restored=N restore_ms=M} (each transition to RUNNING),
 * {@code KSTREAMS STATE S}, {@code KSTREAMS STOPPED} and {@code KSTREAMS ERROR ...}.
 * Logs go to a file (WARN by default).
 */
public final class ReferenceApp {
    static final String STORE = "hello-store";
    static final String OUTPUT_SINK = "output";
    static final String DLQ_SINK = "dlq";

    private static final String USAGE = String.join("\n",
            "Usage: ReferenceApp [OPTIONS]   (each option also reads the environment variable shown)",
            "  --bootstrap-servers HOST:PORT  KSTREAMS_BOOTSTRAP_SERVERS  (default 127.0.0.1:9092)",
            "  --application-id ID            KSTREAMS_APPLICATION_ID     (default hello-kstreams)",
            "  --input TOPIC                  KSTREAMS_INPUT_TOPIC        (default hello-events)",
            "  --output TOPIC                 KSTREAMS_OUTPUT_TOPIC       (default hello-counts)",
            "  --dlq TOPIC                    KSTREAMS_DLQ_TOPIC          (default hello-events-dlq)",
            "  --state-dir DIR                KSTREAMS_STATE_DIR          (default kstreams-state)",
            "  --threads N                    KSTREAMS_THREADS            (num.stream.threads, default 1)",
            "  --session-timeout-ms MS        KSTREAMS_SESSION_TIMEOUT_MS (default 10000, as hello-streams;",
            "                                 classic group protocol only, the broker decides with streams)",
            "  --log-file FILE                KSTREAMS_LOG_FILE           (default hello-kstreams-reference.log)",
            "  --log-level LEVEL              KSTREAMS_LOG_LEVEL          (default warn)",
            "  --config KEY=VALUE             any StreamsConfig/client property, repeatable",
            "The input, output and dead-letter topics must exist (the changelog is created by Kafka Streams).");

    private ReferenceApp() {}

    public static void main(String[] argv) {
        Map<String, String> opts = new LinkedHashMap<>();
        List<String> extra = new ArrayList<>();
        try {
            parse(argv, opts, extra);
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage());
            System.err.println(USAGE);
            System.exit(2);
        }
        if (opts.containsKey("help")) {
            System.out.println(USAGE);
            return;
        }
        String bootstrap = opt(opts, "bootstrap-servers", "127.0.0.1:9092");
        String appId = opt(opts, "application-id", "hello-kstreams");
        String input = opt(opts, "input", "hello-events");
        String output = opt(opts, "output", "hello-counts");
        String dlq = opt(opts, "dlq", "hello-events-dlq");
        String stateDir = opt(opts, "state-dir", "kstreams-state");
        int threads = Integer.parseInt(opt(opts, "threads", "1"));
        int sessionTimeoutMs = Integer.parseInt(opt(opts, "session-timeout-ms", "10000"));
        // slf4j-simple reads these when the first logger is created, which is below.
        System.setProperty("org.slf4j.simpleLogger.logFile", opt(opts, "log-file", "hello-kstreams-reference.log"));
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", opt(opts, "log-level", "warn"));
        System.setProperty("org.slf4j.simpleLogger.showDateTime", "true");
        System.setProperty("org.slf4j.simpleLogger.dateTimeFormat", "yyyy-MM-dd'T'HH:mm:ss.SSS");

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        // Record cache off: every put reaches the changelog (and the store) at once, as in hello-streams.
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        // Writes are staged until their changelog transaction commits, so a crash under
        // exactly-once no longer wipes the store and replays the whole changelog.
        props.put(StreamsConfig.TRANSACTIONAL_STATE_STORES_CONFIG, true);
        for (String kv : extra) {
            int eq = kv.indexOf('=');
            props.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        String groupProtocol = props.getProperty(StreamsConfig.GROUP_PROTOCOL_CONFIG, "classic");
        if (groupProtocol.equalsIgnoreCase("classic")) {
            props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), sessionTimeoutMs);
            props.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG),
                    Math.max(500, sessionTimeoutMs / 4));
        }
        // With group.protocol=streams (KIP-1071) the consumer accepts session.timeout.ms and
        // heartbeat.interval.ms but does not use them: the broker's group config
        // (streams.session.timeout.ms, group.streams.* defaults) applies, so they are not set.

        KafkaStreams streams = new KafkaStreams(topology(input, output, dlq), props);
        CountDownLatch stopped = new CountDownLatch(1);
        AtomicBoolean failed = new AtomicBoolean(false);
        AtomicLong restored = new AtomicLong();
        AtomicLong restoreStartMs = new AtomicLong(-1);
        AtomicLong restoreEndMs = new AtomicLong(-1);

        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long startOffset, long endOffset) {
                restoreStartMs.compareAndSet(-1, System.currentTimeMillis());
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEndOffset, long numRestored) {}

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long totalRestored) {
                restored.addAndGet(totalRestored);
                restoreEndMs.set(System.currentTimeMillis());
                say("RESTORE-END " + tp + " records=" + totalRestored);
            }
        });
        streams.setStateListener((now, before) -> {
            say("STATE " + now);
            if (now == KafkaStreams.State.RUNNING) {
                long start = restoreStartMs.getAndSet(-1);
                long ms = start < 0 ? 0 : Math.max(0, restoreEndMs.get() - start);
                say("RUNNING restored=" + restored.getAndSet(0) + " restore_ms=" + ms);
            } else if (now == KafkaStreams.State.ERROR) {
                failed.set(true);
                stopped.countDown();
            } else if (now == KafkaStreams.State.NOT_RUNNING || now == KafkaStreams.State.PENDING_SHUTDOWN) {
                stopped.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            say("ERROR " + e);
            failed.set(true);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Thread hook = new Thread(() -> {
            streams.close(Duration.ofSeconds(60));
            say("STOPPED");
        }, "shutdown");
        Runtime.getRuntime().addShutdownHook(hook);

        say("STARTING pid=" + ProcessHandle.current().pid() + " application.id=" + appId
                + " kafka_streams=" + kafkaStreamsVersion() + " group.protocol=" + groupProtocol
                + " processing.guarantee=" + props.get(StreamsConfig.PROCESSING_GUARANTEE_CONFIG)
                + " transactional.statestores=" + props.get(StreamsConfig.TRANSACTIONAL_STATE_STORES_CONFIG));
        streams.start();
        try {
            stopped.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (failed.get()) {
            // The shutdown hook closes the client; a non-zero status tells the driver.
            System.exit(1);
        }
    }

    static Topology topology(String input, String output, String dlq) {
        Topology topology = new Topology();
        topology.addSource("input", new ByteArrayDeserializer(), new ByteArrayDeserializer(), input);
        topology.addProcessor("fold", HelloProcessor::new, "input");
        topology.addStateStore(
                Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(STORE), Serdes.String(),
                                new HelloState.StateSerde())
                        .withLoggingEnabled(Map.of())
                        .withCachingDisabled(),
                "fold");
        topology.addSink(OUTPUT_SINK, output, new ByteArraySerializer(), new ByteArraySerializer(), "fold");
        topology.addSink(DLQ_SINK, dlq, new ByteArraySerializer(), new ByteArraySerializer(), "fold");
        return topology;
    }

    /** The version of the kafka-streams jar this JVM actually loaded. */
    static String kafkaStreamsVersion() {
        try (java.io.InputStream in = KafkaStreams.class.getResourceAsStream("/kafka/kafka-streams-version.properties")) {
            if (in == null) return "unknown";
            Properties p = new Properties();
            p.load(in);
            return p.getProperty("version", "unknown");
        } catch (java.io.IOException e) {
            return "unknown";
        }
    }

    private static void say(String line) {
        synchronized (System.out) {
            System.out.println("KSTREAMS " + line);
            System.out.flush();
        }
    }

    private static String opt(Map<String, String> opts, String name, String fallback) {
        String v = opts.get(name);
        if (v != null) return v;
        String env = System.getenv("KSTREAMS_" + name.toUpperCase().replace('-', '_'));
        if (env != null && !env.isBlank()) return env;
        return fallback;
    }

    private static final List<String> NAMES = List.of("bootstrap-servers", "application-id", "input", "output",
            "dlq", "state-dir", "threads", "session-timeout-ms", "log-file", "log-level", "config");

    private static void parse(String[] argv, Map<String, String> opts, List<String> extra) {
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("-h") || a.equals("--help")) {
                opts.put("help", "");
                continue;
            }
            if (!a.startsWith("--")) throw new IllegalArgumentException("unexpected argument " + a);
            String name = a.substring(2);
            String value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else {
                if (i + 1 >= argv.length) throw new IllegalArgumentException(a + " needs a value");
                value = argv[++i];
            }
            if (!NAMES.contains(name)) throw new IllegalArgumentException("unknown option --" + name);
            if (name.equals("config")) {
                if (value.indexOf('=') <= 0) throw new IllegalArgumentException("--config needs KEY=VALUE");
                extra.add(value);
            } else {
                opts.put(name, value);
            }
        }
    }
}
