//! Stable run ids: FNV-1a 64 over a canonical text of the resolved configuration.
//!
//! The id names a run's folder and its summary row, so it must not change between builds,
//! toolchains or machines: std's `DefaultHasher` is explicitly unstable across releases, and
//! TOML writers may reorder keys or reformat numbers. We hash our own canonical text instead
//! (sorted keys, floats in Rust's shortest round-trip form) with FNV-1a 64, which is fully
//! specified by two constants (<http://www.isthe.com/chongo/tech/comp/fnv/>). FNV is not a
//! cryptographic hash; ids only need to tell apart the few hundred runs of one sweep, where
//! the chance of a 64-bit collision is ~10⁻¹⁵.

use toml::Value;

/// FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// A TOML value as canonical text: tables with sorted keys, floats in Rust's shortest
/// round-trip form (`{:?}`), strings with escapes.
pub fn canonical_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(canonical_value).collect();
            format!("[{}]", items.join(","))
        }
        Value::Table(t) => format!("{{{}}}", canonical_table(t).replace('\n', ",")),
    }
}

/// A table as canonical text: one `key=value` line per key, keys sorted bytewise.
pub fn canonical_table(t: &toml::Table) -> String {
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    keys.iter()
        .map(|k| format!("{k:?}={}\n", canonical_value(&t[k.as_str()])))
        .collect()
}

/// The id of a run: 16 lowercase hex digits of FNV-1a 64 over the canonical resolved config
/// (which includes the seed) followed by the data arguments that change what is computed.
pub fn run_id(resolved: &toml::Table, data_identity: &str) -> String {
    let text = format!("config\n{}data\n{data_identity}", canonical_table(resolved));
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_published_test_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn canonical_table_ignores_key_order_and_float_spelling() {
        let a: toml::Table = toml::from_str("b = 1e-2\na = 5\n").unwrap();
        let b: toml::Table = toml::from_str("a = 5\nb = 0.010\n").unwrap();
        assert_eq!(canonical_table(&a), canonical_table(&b));
        assert_eq!(run_id(&a, ""), run_id(&b, ""));
        assert_ne!(run_id(&a, ""), run_id(&a, "n_valid=200\n"));
    }
}
