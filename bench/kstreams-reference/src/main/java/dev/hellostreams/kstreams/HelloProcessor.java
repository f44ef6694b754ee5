package dev.hellostreams.kstreams;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * One input record in, one count-updated record (to the output sink) or one dead letter (to the
 * DLQ sink) out. The state lives in the RocksDB store {@link ReferenceApp#STORE}, whose changelog
 * Kafka Streams writes in the same transaction as the output (exactly_once_v2).
 */
final class HelloProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    /** Values above this many bytes are poison (hello-streams' app.max_value_bytes default). */
    static final int MAX_VALUE_BYTES = 65536;
    /** Dead letters keep at most this many bytes of the value (app.dlq_max_value_bytes). */
    static final int DLQ_MAX_VALUE_BYTES = 16384;

    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<String, HelloState> store;

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        this.store = context.getStateStore(ReferenceApp.STORE);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        RecordMetadata source = context.recordMetadata().orElseThrow();
        String key;
        HelloFold.Event event;
        try {
            key = HelloFold.validateKey(record.key());
            event = HelloFold.decodeEvent(record.value(), MAX_VALUE_BYTES);
        } catch (HelloFold.Poison poison) {
            deadLetter(record, source, poison);
            return;
        }
        HelloFold.Step step = HelloFold.fold(store.get(key), event, source.offset(), record.timestamp());
        store.put(key, step.state());
        byte[] value = HelloFold.countUpdatedJson(key, step, source.partition(), source.offset(),
                record.timestamp(), System.currentTimeMillis());
        context.forward(new Record<>(record.key(), value, record.timestamp(), new RecordHeaders()),
                ReferenceApp.OUTPUT_SINK);
    }

    private void deadLetter(Record<byte[], byte[]> record, RecordMetadata source, HelloFold.Poison poison) {
        byte[] value = record.value() == null ? new byte[0] : record.value();
        byte[] kept = value.length > DLQ_MAX_VALUE_BYTES ? Arrays.copyOf(value, DLQ_MAX_VALUE_BYTES) : value;
        byte[] key = record.key();
        int maxKey = Math.max(DLQ_MAX_VALUE_BYTES, 1024);
        if (key != null && key.length > maxKey) key = Arrays.copyOf(key, maxKey);
        RecordHeaders headers = new RecordHeaders();
        header(headers, "error.kind", poison.kind);
        header(headers, "error.message", poison.getMessage());
        header(headers, "source.topic", source.topic());
        header(headers, "source.partition", Integer.toString(source.partition()));
        header(headers, "source.offset", Long.toString(source.offset()));
        header(headers, "original.size", Integer.toString(value.length));
        header(headers, "truncated", kept.length < value.length ? "true" : "false");
        context.forward(new Record<>(key, kept, record.timestamp(), headers), ReferenceApp.DLQ_SINK);
    }

    private static void header(RecordHeaders headers, String key, String value) {
        headers.add(key, value.getBytes(StandardCharsets.UTF_8));
    }
}
