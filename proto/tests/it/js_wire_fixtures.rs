//! Every frame in `tests/fixtures/js-wire/` (captured from `@automerge/automerge-repo` 2.5.6 by
//! `testkit/js/capture.mjs`) decodes to the message its file name says, its Automerge
//! payload parses, and re-encoding it decodes to the same message.

use std::fs;
use std::path::PathBuf;

use automerge::sync;
use taskflow_proto::wire::{Message, PeerMetadata};

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/js-wire");
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .expect("fixtures folder")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cbor"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, fs::read(&p).expect("readable fixture"))
        })
        .collect();
    out.sort();
    out
}

/// `07-server-sync.cbor` → `sync`; `14-server-doc-unavailable.cbor` → `doc-unavailable`.
fn type_in_name(name: &str) -> &str {
    let stem = name.trim_end_matches(".cbor");
    let after_number = stem.split_once('-').expect("NN-from-type").1;
    after_number.split_once('-').expect("from-type").1
}

#[test]
fn every_captured_frame_decodes_as_its_type_and_round_trips() {
    let frames = fixtures();
    assert!(
        frames.len() >= 20,
        "fixtures present ({} found)",
        frames.len()
    );
    for (name, bytes) in &frames {
        let message = Message::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message.type_name(), type_in_name(name), "{name}");
        let again = Message::decode(&message.encode()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, message, "{name} round trip");
    }
}

#[test]
fn captured_sync_payloads_are_automerge_sync_messages() {
    for (name, bytes) in fixtures() {
        if let Message::Sync(p) | Message::Request(p) = Message::decode(&bytes).expect("decodes") {
            sync::Message::decode(&p.data).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn storage_less_join_reads_undefined_storage_id_as_absent() {
    let bytes = fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/js-wire/03-client-join.cbor"),
    )
    .expect("fixture");
    match Message::decode(&bytes).expect("decodes") {
        Message::Join {
            metadata,
            supported_protocol_versions,
            ..
        } => {
            assert_eq!(
                metadata,
                Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: true
                })
            );
            assert_eq!(supported_protocol_versions, Some(vec!["1".to_owned()]));
        }
        other => panic!("expected join, got {other:?}"),
    }
}

#[test]
fn remote_heads_timestamps_sent_as_floats_are_read() {
    for (name, bytes) in fixtures() {
        if let Message::RemoteHeadsChanged { new_heads, .. } =
            Message::decode(&bytes).expect("decodes")
        {
            assert!(!new_heads.is_empty(), "{name}");
            for heads in new_heads.values() {
                assert!(heads.timestamp > 1.6e12, "{name}: a Date.now() value");
                assert!(!heads.heads.is_empty(), "{name}");
            }
        }
    }
}
