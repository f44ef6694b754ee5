package dev.hellostreams.kstreams;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * The hello counter's domain, as hello-streams defines it (src/domain.rs, DESIGN.md): decoding a
 * record into an event or a poison verdict, the fold, and the count-updated JSON of the output
 * topic. Pure code, no Kafka types, written from the design rather than translated line by line.
 */
final class HelloFold {
    static final int MAX_KEY_BYTES = 255;
    static final String COUNTED_MESSAGE = "Hello";
    static final String REPLY_COUNTED = "Kotlin";
    static final String REPLY_REFUSED = "Don't talk to me!";

    /** Strict JSON: trailing content after the object is an error (as in serde_json). */
    private static final ObjectMapper JSON =
            JsonMapper.builder().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS).build();

    private HelloFold() {}

    enum Kind { HELLO, MOOD, RESET }

    /** A decoded event: a hello with its message, a mood change, or a reset. */
    record Event(Kind kind, String message, boolean angry) {
        static Event hello(String message) { return new Event(Kind.HELLO, message, false); }
        static Event mood(boolean angry) { return new Event(Kind.MOOD, null, angry); }
        static Event reset() { return new Event(Kind.RESET, null, false); }
    }

    /** Why a record is not an event; {@code kind} is the dead-letter header error.kind. */
    static final class Poison extends Exception {
        private static final long serialVersionUID = 1L;
        final String kind;

        Poison(String kind, String message) {
            super(message, null, false, false);
            this.kind = kind;
        }
    }

    static String validateKey(byte[] key) throws Poison {
        if (key == null) throw new Poison("null_key", "record has no key");
        if (key.length == 0) throw new Poison("invalid_key", "key is empty");
        if (key.length > MAX_KEY_BYTES) {
            throw new Poison("key_too_large",
                    "key has " + key.length + " bytes, at most " + MAX_KEY_BYTES + " allowed");
        }
        String text = utf8(key);
        if (text == null) throw new Poison("invalid_key", "key is not valid UTF-8");
        return text;
    }

    static Event decodeEvent(byte[] value, int maxValueBytes) throws Poison {
        if (value == null || value.length == 0) throw new Poison("empty_value", "record has no value");
        if (value.length > maxValueBytes) {
            throw new Poison("value_too_large",
                    "value has " + value.length + " bytes, at most " + maxValueBytes + " allowed");
        }
        String text = utf8(value);
        if (text == null) throw new Poison("invalid_utf8", "value is not UTF-8");
        if (startsWithBrace(text)) return decodeJson(text);
        return Event.hello(text);
    }

    private static Event decodeJson(String text) throws Poison {
        JsonNode root;
        try {
            root = JSON.readTree(text);
        } catch (JsonProcessingException e) {
            throw new Poison("malformed_json", "invalid JSON: " + e.getOriginalMessage());
        }
        if (root == null || !root.isObject()) throw new Poison("malformed_json", "JSON value is not an object");
        JsonNode type = root.get("type");
        if (type == null) throw new Poison("unknown_type", "missing field `type`");
        if (!type.isTextual()) throw new Poison("malformed_json", "field `type` must be a string");
        switch (type.textValue()) {
            case "hello": {
                JsonNode message = root.get("message");
                if (message == null || !message.isTextual()) {
                    throw new Poison("malformed_json", "hello event needs a string field `message`");
                }
                return Event.hello(message.textValue());
            }
            case "mood": {
                JsonNode mood = root.get("mood");
                if (mood == null || !mood.isTextual()) {
                    throw new Poison("unknown_mood", "mood event needs a string field `mood`");
                }
                switch (mood.textValue()) {
                    case "HAPPY": return Event.mood(false);
                    case "ANGRY": return Event.mood(true);
                    default:
                        throw new Poison("unknown_mood",
                                "unknown mood `" + mood.textValue() + "`, expected HAPPY or ANGRY");
                }
            }
            case "reset":
                return Event.reset();
            default:
                throw new Poison("unknown_type",
                        "unknown event type `" + type.textValue() + "`, expected hello, mood or reset");
        }
    }

    /** Strictly decoded UTF-8, or null when the bytes are not valid UTF-8. */
    static String utf8(byte[] bytes) {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes))
                    .toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }

    /** True when the first non-white-space character (Unicode White_Space) is '{'. */
    private static boolean startsWithBrace(String text) {
        int i = 0;
        while (i < text.length()) {
            int cp = text.codePointAt(i);
            if (!isWhiteSpace(cp)) return cp == '{';
            i += Character.charCount(cp);
        }
        return false;
    }

    /** The Unicode White_Space property (what Rust's str::trim_start uses). */
    private static boolean isWhiteSpace(int cp) {
        return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680
                || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F
                || cp == 0x205F || cp == 0x3000;
    }

    /** The result of applying one event: the new state and what happened. */
    record Step(HelloState state, String outcome) {
        String reply() {
            switch (outcome) {
                case "counted": return REPLY_COUNTED;
                case "refused": return REPLY_REFUSED;
                default: return null;
            }
        }
    }

    /** The fold. {@code previous} is null for a key never seen. */
    static Step fold(HelloState previous, Event event, long offset, long timestampMs) {
        HelloState s = previous == null ? HelloState.INITIAL : previous;
        long count = s.helloCount();
        long total = s.helloTotalCount();
        boolean angry = s.angry();
        String outcome;
        switch (event.kind()) {
            case HELLO:
                if (angry) {
                    outcome = "refused";
                } else if (COUNTED_MESSAGE.equals(event.message())) {
                    count++;
                    total++;
                    outcome = "counted";
                } else {
                    outcome = "ignored";
                }
                break;
            case MOOD:
                angry = event.angry();
                outcome = "mood";
                break;
            default:
                count = 0;
                outcome = "reset";
                break;
        }
        return new Step(new HelloState(count, total, angry, s.revision() + 1, offset, timestampMs), outcome);
    }

    /** The count-updated record, field for field the JSON hello-streams writes (camelCase). */
    static byte[] countUpdatedJson(String key, Step step, int sourcePartition, long sourceOffset,
                                   long eventTimestamp, long processedAt) {
        HelloState s = step.state();
        StringBuilder out = new StringBuilder(224);
        out.append("{\"key\":");
        appendJsonString(out, key);
        out.append(",\"helloCount\":").append(s.helloCount())
                .append(",\"helloTotalCount\":").append(s.helloTotalCount())
                .append(",\"mood\":\"").append(s.angry() ? "ANGRY" : "HAPPY")
                .append("\",\"outcome\":\"").append(step.outcome())
                .append("\",\"reply\":");
        String reply = step.reply();
        if (reply == null) {
            out.append("null");
        } else {
            appendJsonString(out, reply);
        }
        out.append(",\"revision\":").append(s.revision())
                .append(",\"sourcePartition\":").append(sourcePartition)
                .append(",\"sourceOffset\":").append(sourceOffset)
                .append(",\"eventTimestamp\":").append(eventTimestamp)
                .append(",\"processedAt\":").append(processedAt)
                .append('}');
        return out.toString().getBytes(StandardCharsets.UTF_8);
    }

    /** JSON string escaping as serde_json does it: quote, backslash and control characters. */
    static void appendJsonString(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\b': out.append("\\b"); break;
                case '\f': out.append("\\f"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        out.append("\\u00").append(Character.forDigit(c >> 4, 16)).append(Character.forDigit(c & 0xF, 16));
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }
}
