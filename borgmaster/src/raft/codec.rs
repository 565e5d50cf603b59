//! The one encoding of what the master group stores and sends: Raft log entries, snapshots of
//! the cell state and Raft messages are MessagePack (rmp-serde) with named fields, a
//! self-describing binary form of the same serde model as JSON, so `#[serde(default)]`, skipped
//! fields and every derive keep their meaning; only the bytes change.
//!
//! Measured (`cargo bench -p borg-benches --bench state`, 10,000 machines and 100,000 tasks):
//! see the benchmarks `checkpoint_json_100k_tasks` and `checkpoint_100k_tasks`.
//!
//! Snapshots of the cell state are that MessagePack compressed with zstd ([`compress`], level
//! [`SNAPSHOT_LEVEL`]): at 1,000,000 tasks the MessagePack is about 280 MB, and a replica that
//! lost its disk waited seconds for it to be stored, read back, sent in 16 MiB chunks and stored
//! again. Names of jobs, users and fields repeat from task to task, so zstd's fastest levels
//! shrink it 50-fold (5.2 MB) for about a quarter of the time the encoding itself takes.
//!
//! Stores and peers written by an earlier version hold JSON or uncompressed MessagePack:
//! [`decode`] reads all three (JSON always starts with `{` here, a MessagePack map never does,
//! nor does either start with zstd's magic number), so a data dir needs no migration and a
//! replica of this version reads an older replica's messages and snapshots. An older replica
//! cannot read this version's messages: upgrade a group's followers before its leader.
//! The small metadata values (vote, committed and purged log ids, snapshot metadata) stay JSON.

/// The zstd level snapshots are compressed at: 1, zstd's fastest standard level (level -3,
/// measured on a synthetic 1,000,000-task cell, compressed hardly faster, 64-85 ms against
/// 75-94 ms, into a frame four times larger that decompressed two to three times slower).
pub const SNAPSHOT_LEVEL: i32 = 1;

/// The largest size, as a multiple of the compressed size, that [`decode`] allocates at once
/// from a frame's recorded content size (scripts/bench-million's 1,000,000-task cell compresses
/// about 54 to 1, a synthetic one 121 to 1).
const MAX_RATIO: u64 = 4096;

/// The first four bytes of every zstd frame (RFC 8878 §3.1.1, 0xFD2FB528 little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Encodes `value` (MessagePack, named fields).
///
/// Errors: serde's (a map key or value that MessagePack cannot hold; none of ours).
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    rmp_serde::to_vec_named(value).map_err(std::io::Error::other)
}

/// Encodes `value` with [`encode`], or as JSON when `json` (for a replica of an earlier
/// version).
///
/// Errors: as [`encode`]'s, or serde_json's.
pub fn encode_as<T: serde::Serialize + ?Sized>(value: &T, json: bool) -> Result<Vec<u8>, std::io::Error> {
    match json {
        true => serde_json::to_vec(value).map_err(std::io::Error::other),
        false => encode(value),
    }
}

/// Whether `bytes` are JSON (written by an earlier version) rather than [`encode`]'s: JSON of
/// our types always starts with `{`, a MessagePack map never does.
pub fn is_json(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

/// `encoded` (bytes from [`encode`]) compressed as one zstd frame at [`SNAPSHOT_LEVEL`], for
/// [`decode`]. The frame records its content size.
///
/// Errors: zstd's (none expected: out of memory aborts first).
pub fn compress(encoded: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    zstd::bulk::compress(encoded, SNAPSHOT_LEVEL)
}

/// Whether `bytes` are a zstd frame ([`compress`]'s).
pub fn is_compressed(bytes: &[u8]) -> bool {
    bytes.starts_with(&ZSTD_MAGIC)
}

/// Decodes bytes written by [`encode`] or by [`compress`] over it, or JSON written by an
/// earlier version.
///
/// Errors: the bytes are none of these (damaged, or from an incompatible version); the message
/// says which encoding was tried and where it failed.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    if is_compressed(bytes) {
        // into a buffer of the size the frame records (one allocation, no copies as it grows),
        // unless that size is implausible for these bytes (a damaged header), then streamed
        let zstd_error = |e: std::io::Error| std::io::Error::other(format!("zstd: {e}"));
        let encoded = match zstd::zstd_safe::get_frame_content_size(bytes) {
            Ok(Some(n)) if n <= (bytes.len() as u64).saturating_mul(MAX_RATIO) => {
                zstd::bulk::decompress(bytes, n as usize).map_err(zstd_error)?
            }
            _ => zstd::stream::decode_all(bytes).map_err(zstd_error)?,
        };
        return rmp_serde::from_slice(&encoded).map_err(|e| std::io::Error::other(format!("MessagePack: {e}")));
    }
    if is_json(bytes) {
        serde_json::from_slice(bytes).map_err(|e| std::io::Error::other(format!("JSON: {e}")))
    } else {
        rmp_serde::from_slice(bytes).map_err(|e| std::io::Error::other(format!("MessagePack: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CellState, Command, Entry};

    fn cell() -> CellState {
        let mut s = CellState::new("t");
        let spec = crate::state::fixtures::spec("j", 3);
        let _ = s.apply(&Entry { time_ms: 1, command: Command::ApplyJob { spec, expected_version: None } });
        s
    }

    /// The cell state and a log entry round-trip through the binary encoding and still decode
    /// from the JSON an earlier version wrote; the binary form is the smaller.
    #[test]
    fn state_and_entries_round_trip_and_json_still_decodes() {
        let s = cell();
        let bin = encode(&s).unwrap();
        let json = serde_json::to_vec(&s).unwrap();
        assert_ne!(bin.first(), Some(&b'{'));
        assert!(bin.len() < json.len(), "binary {} bytes, JSON {}", bin.len(), json.len());
        for bytes in [&bin, &json] {
            let back: CellState = decode(bytes).unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&s).unwrap());
        }
        let entry = openraft::Entry::<super::super::TypeConfig> {
            log_id: openraft::testing::log_id(2, 1, 7),
            payload: openraft::EntryPayload::Normal(super::super::Group::new(vec![Entry {
                time_ms: 5,
                command: Command::KillJob { name: "j".into() },
            }])),
        };
        for bytes in [encode(&entry).unwrap(), serde_json::to_vec(&entry).unwrap()] {
            let back: openraft::Entry<super::super::TypeConfig> = decode(&bytes).unwrap();
            assert_eq!(back.log_id, entry.log_id);
            assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&entry).unwrap());
        }
    }

    /// A group's commands are encoded as the sequence they were before they were shared
    /// (`Vec<Entry>`): logs and peers of earlier versions read as they are.
    #[test]
    fn a_group_encodes_as_a_plain_sequence_of_commands() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Earlier {
            entries: Vec<Entry>,
        }
        let commands = vec![
            Entry { time_ms: 1, command: Command::KillJob { name: "a".into() } },
            Entry { time_ms: 2, command: Command::KillJob { name: "b".into() } },
        ];
        let earlier = encode(&Earlier { entries: commands.clone() }).unwrap();
        assert_eq!(encode(&super::super::Group::new(commands.clone())).unwrap(), earlier);
        let back: super::super::Group = decode(&earlier).unwrap();
        assert_eq!(&back.entries[..], &commands[..]);
    }

    /// A snapshot's compressed form decodes to the same state, is smaller, and is told apart
    /// from the other encodings.
    #[test]
    fn a_compressed_state_round_trips_and_is_the_smallest() {
        let s = cell();
        let bin = encode(&s).unwrap();
        let z = compress(&bin).unwrap();
        assert!(is_compressed(&z) && !is_compressed(&bin) && !is_json(&z));
        assert!(z.len() < bin.len(), "compressed {} bytes, MessagePack {}", z.len(), bin.len());
        let back: CellState = decode(&z).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&s).unwrap());
    }

    /// Damaged bytes are an error that names the encoding, never a panic.
    #[test]
    fn damaged_bytes_are_an_error() {
        let bin = encode(&cell()).unwrap();
        let e = decode::<CellState>(&bin[..bin.len() / 2]).unwrap_err();
        assert!(e.to_string().starts_with("MessagePack: "), "{e}");
        let z = compress(&bin).unwrap();
        let e = decode::<CellState>(&z[..z.len() / 2]).unwrap_err();
        assert!(e.to_string().starts_with("zstd: "), "{e}");
        let e = decode::<CellState>(b"{\"cell\": ").unwrap_err();
        assert!(e.to_string().starts_with("JSON: "), "{e}");
    }
}
