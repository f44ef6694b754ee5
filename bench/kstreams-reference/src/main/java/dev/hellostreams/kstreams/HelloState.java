package dev.hellostreams.kstreams;

import java.nio.ByteBuffer;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serializer;

/**
 * The state of one key: counts, mood and bookkeeping (revision, last source offset, event time of
 * the last change). Stored in RocksDB and in the changelog as 42 bytes: a format byte, the mood
 * byte and five big-endian longs (the same size class as hello-streams' 50-byte record).
 */
record HelloState(long helloCount, long helloTotalCount, boolean angry, long revision, long lastOffset,
                  long updatedAtMs) {
    static final HelloState INITIAL = new HelloState(0, 0, false, 0, -1, 0);

    private static final byte FORMAT_V1 = 1;
    static final int ENCODED_LEN = 2 + 5 * 8;

    byte[] encode() {
        return ByteBuffer.allocate(ENCODED_LEN)
                .put(FORMAT_V1)
                .put((byte) (angry ? 1 : 0))
                .putLong(helloCount)
                .putLong(helloTotalCount)
                .putLong(revision)
                .putLong(lastOffset)
                .putLong(updatedAtMs)
                .array();
    }

    static HelloState decode(byte[] bytes) {
        if (bytes.length != ENCODED_LEN || bytes[0] != FORMAT_V1 || (bytes[1] & 0xFF) > 1) {
            throw new SerializationException("stored state has " + bytes.length + " bytes, expected "
                    + ENCODED_LEN + " of format " + FORMAT_V1);
        }
        ByteBuffer b = ByteBuffer.wrap(bytes, 2, ENCODED_LEN - 2);
        boolean angry = bytes[1] == 1;
        return new HelloState(b.getLong(), b.getLong(), angry, b.getLong(), b.getLong(), b.getLong());
    }

    /** The serde of the store (and so of its changelog). */
    static final class StateSerde implements Serde<HelloState> {
        @Override
        public Serializer<HelloState> serializer() {
            return (topic, state) -> state == null ? null : state.encode();
        }

        @Override
        public Deserializer<HelloState> deserializer() {
            return (topic, bytes) -> bytes == null ? null : decode(bytes);
        }
    }
}
