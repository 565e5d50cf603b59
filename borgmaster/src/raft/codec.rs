//! The one encoding of what the master group stores and sends: Raft log entries, snapshots of
//! the cell state and Raft messages are MessagePack (rmp-serde) with named fields, a
//! self-describing binary form of the same serde model as JSON, so `#[serde(default)]`, skipped
//! fields and every derive keep their meaning; only the bytes change.
//!
//! Measured (`cargo bench -p borg-benches --bench state`, 10,000 machines and 100,000 tasks):
//! see the benchmarks `checkpoint_json_100k_tasks` and `checkpoint_100k_tasks`.
//!
//! Stores and peers written by an earlier version hold JSON: [`decode`] reads both (JSON
//! always starts with `{` here, a MessagePack map never does), so a data dir needs no
//! migration and a replica of this version reads an older replica's messages. An older replica
//! cannot read this version's messages: upgrade a group's followers before its leader.
//! The small metadata values (vote, committed and purged log ids, snapshot metadata) stay JSON.

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

/// Decodes bytes written by [`encode`], or JSON written by an earlier version.
///
/// Errors: the bytes are neither (damaged, or from an incompatible version); the message says
/// which encoding was tried and where it failed.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
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
            payload: openraft::EntryPayload::Normal(super::super::Group {
                entries: vec![Entry { time_ms: 5, command: Command::KillJob { name: "j".into() } }],
            }),
        };
        for bytes in [encode(&entry).unwrap(), serde_json::to_vec(&entry).unwrap()] {
            let back: openraft::Entry<super::super::TypeConfig> = decode(&bytes).unwrap();
            assert_eq!(back.log_id, entry.log_id);
            assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&entry).unwrap());
        }
    }

    /// Damaged bytes are an error that names the encoding, never a panic.
    #[test]
    fn damaged_bytes_are_an_error() {
        let bin = encode(&cell()).unwrap();
        let e = decode::<CellState>(&bin[..bin.len() / 2]).unwrap_err();
        assert!(e.to_string().starts_with("MessagePack: "), "{e}");
        let e = decode::<CellState>(b"{\"cell\": ").unwrap_err();
        assert!(e.to_string().starts_with("JSON: "), "{e}");
    }
}
