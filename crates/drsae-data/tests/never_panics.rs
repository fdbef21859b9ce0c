//! `parse_idx` and `decode_idx` return `Ok` or `Err` for any bytes and never panic.

use std::io::Write;
use std::path::Path;

use drsae_data::{decode_idx, parse_idx};
use proptest::prelude::*;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A valid 16-byte header for an array of `a × b × c` unsigned bytes.
fn header(a: u32, b: u32, c: u32) -> Vec<u8> {
    let mut h = vec![0, 0, 8, 3];
    for d in [a, b, c] {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_idx_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_idx(&bytes, Path::new("any"));
        let _ = decode_idx(&bytes, Path::new("any"));
    }

    #[test]
    fn parse_idx_never_panics_after_a_valid_header(
        a in any::<u32>(), b in 0u32..40, c in 0u32..40,
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = header(a, b, c);
        bytes.extend_from_slice(&body);
        let result = parse_idx(&bytes, Path::new("h"));
        // Exactly when the body has the promised length is the array accepted.
        let fits = u64::from(a) * u64::from(b) * u64::from(c) == body.len() as u64;
        prop_assert_eq!(result.is_ok(), fits);
    }

    #[test]
    fn parse_idx_never_panics_after_any_header_prefix(
        rank in any::<u8>(), code in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut bytes = vec![0, 0, code, rank];
        bytes.extend_from_slice(&rest);
        let _ = parse_idx(&bytes, Path::new("p"));
    }

    #[test]
    fn decode_idx_never_panics_on_gzip_of_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let gz = gzip(&bytes);
        let _ = decode_idx(&gz, Path::new("g"));
        // Cut short anywhere, and with one byte corrupted anywhere.
        let _ = decode_idx(&gz[..cut.index(gz.len())], Path::new("g"));
        let mut bad = gz.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 0x5a;
        let _ = decode_idx(&bad, Path::new("g"));
    }

    #[test]
    fn decode_idx_round_trips_gzip_of_valid_arrays(
        b in 0u32..10, c in 0u32..10, seed in any::<u8>(),
    ) {
        let mut bytes = header(2, b, c);
        bytes.extend((0..2 * b * c).map(|i| (i as u8).wrapping_add(seed)));
        let raw = parse_idx(&bytes, Path::new("r")).unwrap();
        prop_assert_eq!(decode_idx(&gzip(&bytes), Path::new("r")).unwrap(), raw);
    }
}
