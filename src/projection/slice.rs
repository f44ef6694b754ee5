//! Pekko Persistence's names for an entity: its persistence id and its slice.
//!
//! A Pekko or Akka application that reads the projected tables finds a key's row through
//! these two values, so they must be computed exactly as the JVM does: `PersistenceId`
//! joins entity type and id with `|`, and `Persistence.sliceForPersistenceId` is
//! `math.abs(persistenceId.hashCode % numberOfSlices)` with Java's `String.hashCode`.

/// Pekko's fixed number of slices.
pub const NUMBER_OF_SLICES: i32 = 1024;

/// Pekko's separator between entity type and entity id.
pub const SEPARATOR: char = '|';

pub fn persistence_id(entity_type: &str, key: &str) -> String {
    let mut id = String::with_capacity(entity_type.len() + 1 + key.len());
    id.push_str(entity_type);
    id.push(SEPARATOR);
    id.push_str(key);
    id
}

/// `java.lang.String.hashCode`: `31 * h + c` over the UTF-16 code units, wrapping in 32
/// bits. Characters outside the BMP count as their two surrogates, as in Java.
pub fn java_string_hash(text: &str) -> i32 {
    let mut hash: i32 = 0;
    for unit in text.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    hash
}

/// Java's `%` truncates towards zero like Rust's, so the remainder keeps the hash's sign and
/// `abs` folds it into 0..1024; it can never overflow since |remainder| < 1024.
pub fn slice(persistence_id: &str) -> i32 {
    (java_string_hash(persistence_id) % NUMBER_OF_SLICES).abs()
}

/// Characters (not bytes) PostgreSQL's `VARCHAR(255)` columns of the seed's schema accept.
pub const MAX_ID_CHARS: usize = 255;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_java_values() {
        // Values printed by `System.out.println("...".hashCode())` on OpenJDK 17.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("Hello World"), -862_545_276);
    }

    #[test]
    fn slices_stay_in_range_for_negative_hashes() {
        let id = "Hello World";
        assert!(java_string_hash(id) < 0);
        assert_eq!(slice(id), (-862_545_276i32 % 1024).abs());
        for key in ["alice", "bob", "안녕하세요", "😀", &"k".repeat(255)] {
            let s = slice(&persistence_id("HelloState", key));
            assert!((0..NUMBER_OF_SLICES).contains(&s), "{key}: {s}");
        }
    }

    #[test]
    fn astral_characters_hash_as_two_surrogates() {
        let (high, low) = (0xD83Du16 as i32, 0xDE00u16 as i32);
        assert_eq!(java_string_hash("😀"), high * 31 + low);
    }

    #[test]
    fn persistence_ids_use_the_pipe() {
        assert_eq!(persistence_id("HelloState", "alice"), "HelloState|alice");
    }
}
