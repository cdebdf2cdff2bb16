//! Byte-level mutations of known-good inputs, as proptest values: bit flips,
//! truncation, insertion and deletion of bytes, and splicing in a run of bytes from
//! elsewhere in the input (for WebAssembly, often a section of its own). A list of
//! mutations shrinks towards fewer and smaller ones, so a failure ends up near the seed.

use proptest::prelude::*;

/// One change to a byte string. Positions are fractions of its length (in 1/65536ths),
/// so a mutation means the same thing whatever the seed's size.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip one bit.
    FlipBit { at: u16, bit: u8 },
    /// Set one byte.
    SetByte { at: u16, value: u8 },
    /// Keep only the first part.
    Truncate { at: u16 },
    /// Insert bytes.
    Insert { at: u16, bytes: Vec<u8> },
    /// Remove up to `len` bytes.
    Delete { at: u16, len: u16 },
    /// Copy `len` bytes from `from` to `to` (inserted, not overwritten).
    Splice { from: u16, len: u16, to: u16 },
}

fn position(at: u16, len: usize) -> usize {
    (len * usize::from(at)) >> 16
}

/// Applies `mutations` to `bytes`, in order.
pub fn apply(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for mutation in mutations {
        let len = out.len();
        match mutation {
            Mutation::FlipBit { at, bit } if len > 0 => {
                out[position(*at, len)] ^= 1 << (bit % 8);
            }
            Mutation::SetByte { at, value } if len > 0 => out[position(*at, len)] = *value,
            Mutation::Truncate { at } => out.truncate(position(*at, len)),
            Mutation::Insert { at, bytes } => {
                let at = position(*at, len + 1);
                out.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete { at, len: n } => {
                let at = position(*at, len);
                let end = (at + usize::from(*n)).min(len);
                out.drain(at..end);
            }
            Mutation::Splice { from, len: n, to } => {
                let from = position(*from, len);
                let end = (from + usize::from(*n)).min(len);
                let piece = out[from..end].to_vec();
                let to = position(*to, len + 1).min(out.len());
                out.splice(to..to, piece);
            }
            _ => {}
        }
    }
    out
}

/// Bytes that tend to matter to parsers: LEB128 continuations and extremes, section
/// ids, the magic and version bytes, JSON punctuation.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![
            0x00, 0x01, 0x0d, 0x7f, 0x80, 0xff, 0x0a, b'"', b'\\', b'{', b'}', b'[', b']', b':',
            b',', b'0',
        ]),
    ]
}

/// A few mutations, the first kinds (small edits) more often than the rest.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        4 => (any::<u16>(), any::<u8>()).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        4 => (any::<u16>(), interesting_byte()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        1 => any::<u16>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<u16>(), prop::collection::vec(interesting_byte(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (any::<u16>(), 1u16..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        2 => (any::<u16>(), 1u16..4096, any::<u16>())
            .prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
    ];
    prop::collection::vec(one, 1..6)
}

/// One of `seeds`, mutated.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "mutations need a seed");
    let seeds = std::sync::Arc::new(seeds);
    (0..seeds.len(), mutations()).prop_map(move |(i, m)| apply(&seeds[i], &m))
}
