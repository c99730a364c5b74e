//! Identifiers.
//!
//! Ids are ULIDs with a kind prefix and the shard they live in: `ex_3_01JD…`, `job_0_01JD…`.
//! Carrying the shard in the id lets any process address a record without a lookup. Shards
//! are chosen by [`shard_for_key`] (a stable FNV-1a hash) when a natural key exists (a target
//! or an idempotency key), so that every record that must be checked atomically together
//! lands in the same Redis Cluster slot.

/// Kind prefix of an execution id.
pub const EXECUTION: &str = "ex";
/// Kind prefix of a job id.
pub const JOB: &str = "job";
/// Kind prefix of a schedule id.
pub const SCHEDULE: &str = "sch";

/// A parsed id: its kind prefix, shard and ULID part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedId<'a> {
    /// `ex`, `job` or `sch`.
    pub prefix: &'a str,
    /// The shard number.
    pub shard: u32,
    /// The ULID text.
    pub ulid: &'a str,
}

/// Why an id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{id}` is not a valid {expected} id (expected `{expected}_<shard>_<ULID>`)")]
pub struct BadId {
    /// The text that was given.
    pub id: String,
    /// The expected prefix.
    pub expected: &'static str,
}

/// Makes a new id of kind `prefix` in `shard`.
pub fn new_id(prefix: &str, shard: u32) -> String {
    format!("{prefix}_{shard}_{}", ulid::Ulid::generate())
}

/// Parses an id and checks its prefix.
pub fn parse<'a>(id: &'a str, expected: &'static str) -> Result<ParsedId<'a>, BadId> {
    let bad = || BadId { id: id.chars().take(200).collect(), expected };
    let rest = id.strip_prefix(expected).and_then(|r| r.strip_prefix('_')).ok_or_else(bad)?;
    let (shard, ulid) = rest.split_once('_').ok_or_else(bad)?;
    let shard: u32 = shard.parse().map_err(|_| bad())?;
    if ulid.len() != 26 || ulid::Ulid::from_string(ulid).is_err() {
        return Err(bad());
    }
    Ok(ParsedId { prefix: &id[..expected.len()], shard, ulid })
}

/// The shard of an id, if it is well formed.
pub fn shard_of(id: &str, expected: &'static str) -> Result<u32, BadId> {
    parse(id, expected).map(|p| p.shard)
}

/// A stable 64-bit FNV-1a hash; the same on every machine and every build.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard a natural key (target, idempotency key) belongs to.
pub fn shard_for_key(key: &str, shards: u32) -> u32 {
    let shards = shards.max(1);
    u32::try_from(fnv1a(key.as_bytes()) % u64::from(shards)).unwrap_or(0)
}

/// A uniformly spread shard for records without a natural key.
pub fn random_shard(shards: u32) -> u32 {
    let shards = shards.max(1);
    // The random part of a fresh ULID is as good a source as any and keeps `rand` out of core.
    let r = ulid::Ulid::generate().random();
    u32::try_from(r % u128::from(shards)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_round_trip_through_parse_with_their_shard() {
        let id = new_id(JOB, 7);
        let parsed = parse(&id, JOB).unwrap();
        assert_eq!(parsed.shard, 7);
        assert_eq!(parsed.prefix, "job");
        assert_eq!(shard_of(&id, JOB), Ok(7));
    }

    #[test]
    fn malformed_ids_are_refused_with_the_expected_shape() {
        for bad in ["", "job", "job_", "job_x_01JD0000000000000000000000", "ex_1_01JD", "job_1_nope"] {
            let err = parse(bad, JOB).unwrap_err();
            assert!(err.to_string().contains("job_<shard>_<ULID>"), "{err}");
        }
        let ex = new_id(EXECUTION, 0);
        assert!(parse(&ex, JOB).is_err());
    }

    #[test]
    fn shard_for_key_is_stable_and_in_range() {
        assert_eq!(shard_for_key("repo:acme/web", 1), 0);
        let a = shard_for_key("repo:acme/web", 8);
        assert_eq!(a, shard_for_key("repo:acme/web", 8));
        assert!(a < 8);
        // FNV-1a reference value for "a".
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        for _ in 0..100 {
            assert!(random_shard(3) < 3);
        }
    }
}
