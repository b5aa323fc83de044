//! The automerge-repo network protocol v1: message types and their CBOR codec.
//!
//! One message is one CBOR map with text keys, carried in one binary WebSocket frame. The decoder
//! is deliberately forgiving about encoding (the JS client uses `cbor-x`): definite or indefinite
//! maps, arrays and strings; untagged or typed-array-tagged byte strings; `undefined` or `null`
//! for absent optional values; integral floats where integers are expected; unknown keys and
//! unknown keys' values of any shape are skipped; `peerMetadata` or the older `metadata`.
//! It is strict about meaning: a missing required field, a field of the wrong kind or an
//! unparsable document id is a [`DecodeError`].
//!
//! The encoder writes what the JS client reads: definite maps, untagged byte strings, integers.

use std::collections::BTreeMap;

use minicbor::data::{Tag, Type};
use minicbor::{Decoder, Encoder};

use crate::ids::{DocumentId, IdError, PeerId, StorageId};

/// The only protocol version there is.
pub const PROTOCOL_V1: &str = "1";

/// What a peer says about itself in `join` / `peer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    pub storage_id: Option<StorageId>,
    pub is_ephemeral: bool,
}

/// One storage's heads for a document, as gossiped in `remote-heads-changed`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteHeads {
    /// Base58-encoded change hashes, as the JS repo writes them.
    pub heads: Vec<String>,
    /// Milliseconds since the epoch when the heads were observed.
    pub timestamp: f64,
}

/// A document-scoped message's addressing and payload (`request` and `sync` share it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPayload {
    pub sender_id: PeerId,
    pub target_id: PeerId,
    pub document_id: DocumentId,
    /// An Automerge sync message (not decoded here).
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Join {
        sender_id: PeerId,
        metadata: Option<PeerMetadata>,
        /// `None` when the peer sent none; the protocol treats that as `["1"]`.
        supported_protocol_versions: Option<Vec<String>>,
    },
    Peer {
        sender_id: PeerId,
        target_id: PeerId,
        metadata: Option<PeerMetadata>,
        selected_protocol_version: String,
    },
    Error {
        sender_id: PeerId,
        target_id: Option<PeerId>,
        message: String,
    },
    Leave {
        sender_id: PeerId,
    },
    /// A sync message from a peer that has no heads for the document yet.
    Request(SyncPayload),
    Sync(SyncPayload),
    DocUnavailable {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
    },
    Ephemeral {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    },
    RemoteSubscriptionChange {
        sender_id: PeerId,
        target_id: PeerId,
        add: Vec<StorageId>,
        remove: Vec<StorageId>,
    },
    RemoteHeadsChanged {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        new_heads: BTreeMap<StorageId, RemoteHeads>,
    },
}

/// Why a frame is not a protocol message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid CBOR: {0}")]
    Cbor(String),
    #[error("frame is not a CBOR map")]
    NotAMap,
    #[error("trailing bytes after the message")]
    TrailingBytes,
    #[error("message has no `type`")]
    MissingType,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("`{message_type}` message is missing `{field}`")]
    MissingField {
        message_type: &'static str,
        field: &'static str,
    },
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("field `documentId`: {0}")]
    InvalidDocumentId(#[from] IdError),
}

impl From<minicbor::decode::Error> for DecodeError {
    fn from(e: minicbor::decode::Error) -> Self {
        DecodeError::Cbor(e.to_string())
    }
}

impl Message {
    /// The `type` string of this message on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Join { .. } => "join",
            Message::Peer { .. } => "peer",
            Message::Error { .. } => "error",
            Message::Leave { .. } => "leave",
            Message::Request(_) => "request",
            Message::Sync(_) => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral { .. } => "ephemeral",
            Message::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Message::RemoteHeadsChanged { .. } => "remote-heads-changed",
        }
    }

    pub fn sender_id(&self) -> &PeerId {
        match self {
            Message::Join { sender_id, .. }
            | Message::Peer { sender_id, .. }
            | Message::Error { sender_id, .. }
            | Message::Leave { sender_id }
            | Message::DocUnavailable { sender_id, .. }
            | Message::Ephemeral { sender_id, .. }
            | Message::RemoteSubscriptionChange { sender_id, .. }
            | Message::RemoteHeadsChanged { sender_id, .. } => sender_id,
            Message::Request(p) | Message::Sync(p) => &p.sender_id,
        }
    }

    /// Decodes one frame.
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        let mut d = Decoder::new(frame);
        let fields = Fields::read(&mut d)?;
        if d.position() != frame.len() {
            return Err(DecodeError::TrailingBytes);
        }
        fields.into_message()
    }

    /// Encodes this message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new());
        self.write(&mut e)
            .expect("writing CBOR to a Vec cannot fail");
        e.into_writer()
    }

    fn write(
        &self,
        e: &mut Encoder<Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
        match self {
            Message::Join {
                sender_id,
                metadata,
                supported_protocol_versions,
            } => {
                let n = 2
                    + u64::from(metadata.is_some())
                    + u64::from(supported_protocol_versions.is_some());
                e.map(n)?;
                e.str("type")?.str("join")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                if let Some(m) = metadata {
                    e.str("peerMetadata")?;
                    write_metadata(e, m)?;
                }
                if let Some(versions) = supported_protocol_versions {
                    e.str("supportedProtocolVersions")?
                        .array(versions.len() as u64)?;
                    for v in versions {
                        e.str(v)?;
                    }
                }
            }
            Message::Peer {
                sender_id,
                target_id,
                metadata,
                selected_protocol_version,
            } => {
                e.map(4 + u64::from(metadata.is_some()))?;
                e.str("type")?.str("peer")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("selectedProtocolVersion")?
                    .str(selected_protocol_version)?;
                if let Some(m) = metadata {
                    e.str("peerMetadata")?;
                    write_metadata(e, m)?;
                }
            }
            Message::Error {
                sender_id,
                target_id,
                message,
            } => {
                e.map(3 + u64::from(target_id.is_some()))?;
                e.str("type")?.str("error")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                if let Some(t) = target_id {
                    e.str("targetId")?.str(t.as_str())?;
                }
                e.str("message")?.str(message)?;
            }
            Message::Leave { sender_id } => {
                e.map(2)?;
                e.str("type")?.str("leave")?;
                e.str("senderId")?.str(sender_id.as_str())?;
            }
            Message::Request(p) | Message::Sync(p) => {
                e.map(5)?;
                e.str("type")?.str(self.type_name())?;
                e.str("senderId")?.str(p.sender_id.as_str())?;
                e.str("targetId")?.str(p.target_id.as_str())?;
                e.str("documentId")?.str(&p.document_id.to_string())?;
                e.str("data")?.bytes(&p.data)?;
            }
            Message::DocUnavailable {
                sender_id,
                target_id,
                document_id,
            } => {
                e.map(4)?;
                e.str("type")?.str("doc-unavailable")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("documentId")?.str(&document_id.to_string())?;
            }
            Message::Ephemeral {
                sender_id,
                target_id,
                document_id,
                session_id,
                count,
                data,
            } => {
                e.map(7)?;
                e.str("type")?.str("ephemeral")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("sessionId")?.str(session_id)?;
                e.str("count")?.u64(*count)?;
                e.str("data")?.bytes(data)?;
            }
            Message::RemoteSubscriptionChange {
                sender_id,
                target_id,
                add,
                remove,
            } => {
                e.map(5)?;
                e.str("type")?.str("remote-subscription-change")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                for (key, ids) in [("add", add), ("remove", remove)] {
                    e.str(key)?.array(ids.len() as u64)?;
                    for id in ids {
                        e.str(id.as_str())?;
                    }
                }
            }
            Message::RemoteHeadsChanged {
                sender_id,
                target_id,
                document_id,
                new_heads,
            } => {
                e.map(5)?;
                e.str("type")?.str("remote-heads-changed")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("newHeads")?.map(new_heads.len() as u64)?;
                for (storage, h) in new_heads {
                    e.str(storage.as_str())?.map(2)?;
                    e.str("heads")?.array(h.heads.len() as u64)?;
                    for head in &h.heads {
                        e.str(head)?;
                    }
                    e.str("timestamp")?;
                    write_number(e, h.timestamp)?;
                }
            }
        }
        Ok(())
    }
}

fn write_metadata(
    e: &mut Encoder<Vec<u8>>,
    m: &PeerMetadata,
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    e.map(1 + u64::from(m.storage_id.is_some()))?;
    if let Some(s) = &m.storage_id {
        e.str("storageId")?.str(s.as_str())?;
    }
    e.str("isEphemeral")?.bool(m.is_ephemeral)?;
    Ok(())
}

/// Integral numbers go out as CBOR integers (what cbor-x writes for them), others as floats.
fn write_number(
    e: &mut Encoder<Vec<u8>>,
    n: f64,
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    if n.fract() == 0.0 && n >= 0.0 && n < u64::MAX as f64 {
        e.u64(n as u64)?;
    } else {
        e.f64(n)?;
    }
    Ok(())
}

/// Every key a message may carry, read before the `type` is known (it may come last).
#[derive(Default)]
struct Fields {
    message_type: Option<String>,
    sender_id: Option<String>,
    target_id: Option<String>,
    metadata: Option<PeerMetadata>,
    supported_protocol_versions: Option<Vec<String>>,
    selected_protocol_version: Option<String>,
    message: Option<String>,
    document_id: Option<String>,
    data: Option<Vec<u8>>,
    session_id: Option<String>,
    count: Option<u64>,
    add: Option<Vec<String>>,
    remove: Option<Vec<String>>,
    new_heads: Option<BTreeMap<StorageId, RemoteHeads>>,
}

impl Fields {
    fn read(d: &mut Decoder<'_>) -> Result<Fields, DecodeError> {
        let mut f = Fields::default();
        if !matches!(d.datatype()?, Type::Map | Type::MapIndef) {
            return Err(DecodeError::NotAMap);
        }
        for_each_entry(d, |d, key| {
            match key {
                "type" => f.message_type = opt(d, "type", read_text)?,
                "senderId" => f.sender_id = opt(d, "senderId", read_text)?,
                "targetId" => f.target_id = opt(d, "targetId", read_text)?,
                // `metadata` is the pre-2.0 name; `peerMetadata` wins when both are present.
                "peerMetadata" => f.metadata = opt(d, "peerMetadata", read_metadata)?,
                "metadata" => {
                    let m = opt(d, "metadata", read_metadata)?;
                    f.metadata = f.metadata.take().or(m);
                }
                "supportedProtocolVersions" => {
                    f.supported_protocol_versions =
                        opt(d, "supportedProtocolVersions", |d, n| read_text_array(d, n))?
                }
                "selectedProtocolVersion" => {
                    f.selected_protocol_version = opt(d, "selectedProtocolVersion", read_text)?
                }
                "message" => f.message = opt(d, "message", read_text)?,
                "documentId" => f.document_id = opt(d, "documentId", read_text)?,
                "data" => f.data = opt(d, "data", read_bytes)?,
                "sessionId" => f.session_id = opt(d, "sessionId", read_text)?,
                "count" => f.count = opt(d, "count", read_uint)?,
                "add" => f.add = opt(d, "add", |d, n| read_text_array(d, n))?,
                "remove" => f.remove = opt(d, "remove", |d, n| read_text_array(d, n))?,
                "newHeads" => f.new_heads = opt(d, "newHeads", read_new_heads)?,
                _ => d.skip()?,
            }
            Ok(())
        })?;
        Ok(f)
    }

    fn into_message(self) -> Result<Message, DecodeError> {
        let message_type = self.message_type.clone().ok_or(DecodeError::MissingType)?;
        let t: &'static str = match message_type.as_str() {
            "join" => "join",
            "peer" => "peer",
            "error" => "error",
            "leave" => "leave",
            "request" => "request",
            "sync" => "sync",
            "doc-unavailable" => "doc-unavailable",
            "ephemeral" => "ephemeral",
            "remote-subscription-change" => "remote-subscription-change",
            "remote-heads-changed" => "remote-heads-changed",
            _ => return Err(DecodeError::UnknownType(message_type)),
        };
        let need = |v: Option<String>, field: &'static str| {
            v.ok_or(DecodeError::MissingField {
                message_type: t,
                field,
            })
        };
        let sender_id = PeerId::new(need(self.sender_id, "senderId")?);
        let target = |v: Option<String>| need(v, "targetId").map(PeerId::new);
        let document = |v: Option<String>| -> Result<DocumentId, DecodeError> {
            Ok(DocumentId::parse(&need(v, "documentId")?)?)
        };
        let data = |v: Option<Vec<u8>>| {
            v.ok_or(DecodeError::MissingField {
                message_type: t,
                field: "data",
            })
        };
        Ok(match t {
            "join" => Message::Join {
                sender_id,
                metadata: self.metadata,
                supported_protocol_versions: self.supported_protocol_versions,
            },
            "peer" => Message::Peer {
                sender_id,
                target_id: target(self.target_id)?,
                metadata: self.metadata,
                // Absent in very old peers; v1 is the only version there is.
                selected_protocol_version: self
                    .selected_protocol_version
                    .unwrap_or_else(|| PROTOCOL_V1.to_owned()),
            },
            "error" => Message::Error {
                sender_id,
                target_id: self.target_id.map(PeerId::new),
                message: self.message.unwrap_or_default(),
            },
            "leave" => Message::Leave { sender_id },
            "request" | "sync" => {
                let payload = SyncPayload {
                    sender_id,
                    target_id: target(self.target_id)?,
                    document_id: document(self.document_id)?,
                    data: data(self.data)?,
                };
                if t == "request" {
                    Message::Request(payload)
                } else {
                    Message::Sync(payload)
                }
            }
            "doc-unavailable" => Message::DocUnavailable {
                sender_id,
                target_id: target(self.target_id)?,
                document_id: document(self.document_id)?,
            },
            "ephemeral" => Message::Ephemeral {
                sender_id,
                target_id: target(self.target_id)?,
                document_id: document(self.document_id)?,
                session_id: need(self.session_id, "sessionId")?,
                count: self.count.ok_or(DecodeError::MissingField {
                    message_type: t,
                    field: "count",
                })?,
                data: data(self.data)?,
            },
            "remote-subscription-change" => Message::RemoteSubscriptionChange {
                sender_id,
                target_id: target(self.target_id)?,
                add: self
                    .add
                    .unwrap_or_default()
                    .into_iter()
                    .map(StorageId::new)
                    .collect(),
                remove: self
                    .remove
                    .unwrap_or_default()
                    .into_iter()
                    .map(StorageId::new)
                    .collect(),
            },
            "remote-heads-changed" => Message::RemoteHeadsChanged {
                sender_id,
                target_id: target(self.target_id)?,
                document_id: document(self.document_id)?,
                new_heads: self.new_heads.unwrap_or_default(),
            },
            _ => unreachable!("every known type is matched above"),
        })
    }
}

type ReadFn<'b, T> = fn(&mut Decoder<'b>, &'static str) -> Result<T, DecodeError>;

/// Reads an optional value: CBOR `undefined` and `null` mean absent.
fn opt<'b, T>(
    d: &mut Decoder<'b>,
    field: &'static str,
    read: impl FnOnce(&mut Decoder<'b>, &'static str) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    match d.datatype()? {
        Type::Undefined => {
            d.undefined()?;
            Ok(None)
        }
        Type::Null => {
            d.null()?;
            Ok(None)
        }
        _ => read(d, field).map(Some),
    }
}

fn wrong(field: &'static str, expected: &'static str, found: Type) -> DecodeError {
    DecodeError::WrongType {
        field,
        expected,
        found: found.to_string(),
    }
}

/// Calls `entry` once per map entry with a text key; entries with other keys are skipped.
fn for_each_entry<'b>(
    d: &mut Decoder<'b>,
    mut entry: impl FnMut(&mut Decoder<'b>, &str) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = d.map()?;
    let mut seen = 0u64;
    loop {
        match len {
            Some(n) if seen == n => break,
            None if d.datatype()? == Type::Break => {
                d.skip()?;
                break;
            }
            _ => {}
        }
        seen += 1;
        match d.datatype()? {
            Type::String | Type::StringIndef => {
                let key = read_text(d, "key")?;
                entry(d, &key)?;
            }
            _ => {
                d.skip()?;
                d.skip()?;
            }
        }
    }
    Ok(())
}

fn read_text(d: &mut Decoder<'_>, field: &'static str) -> Result<String, DecodeError> {
    match d.datatype()? {
        Type::String => Ok(d.str()?.to_owned()),
        Type::StringIndef => {
            let mut s = String::new();
            for chunk in d.str_iter()? {
                s.push_str(chunk?);
            }
            Ok(s)
        }
        other => Err(wrong(field, "a text string", other)),
    }
}

/// Byte strings, untagged as the JS client writes them, or wrapped in the RFC 8746
/// `uint8 typed array` tag (64) that a default cbor-x encoder would add.
fn read_bytes(d: &mut Decoder<'_>, field: &'static str) -> Result<Vec<u8>, DecodeError> {
    match d.datatype()? {
        Type::Bytes => Ok(d.bytes()?.to_vec()),
        Type::BytesIndef => {
            let mut out = Vec::new();
            for chunk in d.bytes_iter()? {
                out.extend_from_slice(chunk?);
            }
            Ok(out)
        }
        Type::Tag => {
            let tag = d.tag()?;
            if tag != Tag::new(64) {
                return Err(wrong(field, "a byte string", Type::Tag));
            }
            read_bytes(d, field)
        }
        other => Err(wrong(field, "a byte string", other)),
    }
}

/// Non-negative integers; JS numbers may arrive as floats, accepted when integral.
fn read_uint(d: &mut Decoder<'_>, field: &'static str) -> Result<u64, DecodeError> {
    let t = d.datatype()?;
    let float = match t {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => return Ok(d.u64()?),
        Type::F16 => f64::from(d.f16()?),
        Type::F32 => f64::from(d.f32()?),
        Type::F64 => d.f64()?,
        other => return Err(wrong(field, "a non-negative integer", other)),
    };
    if float.fract() == 0.0 && (0.0..=(u64::MAX as f64)).contains(&float) {
        Ok(float as u64)
    } else {
        Err(DecodeError::WrongType {
            field,
            expected: "a non-negative integer",
            found: format!("{float}"),
        })
    }
}

fn read_number(d: &mut Decoder<'_>, field: &'static str) -> Result<f64, DecodeError> {
    match d.datatype()? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => Ok(d.u64()? as f64),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 => Ok(d.i64()? as f64),
        Type::F16 => Ok(f64::from(d.f16()?)),
        Type::F32 => Ok(f64::from(d.f32()?)),
        Type::F64 => Ok(d.f64()?),
        other => Err(wrong(field, "a number", other)),
    }
}

fn read_bool(d: &mut Decoder<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match d.datatype()? {
        Type::Bool => Ok(d.bool()?),
        other => Err(wrong(field, "a boolean", other)),
    }
}

fn read_array<'b, T>(
    d: &mut Decoder<'b>,
    field: &'static str,
    item: ReadFn<'b, T>,
) -> Result<Vec<T>, DecodeError> {
    let len = match d.datatype()? {
        Type::Array | Type::ArrayIndef => d.array()?,
        other => return Err(wrong(field, "an array", other)),
    };
    let mut out = Vec::new();
    loop {
        match len {
            Some(n) if out.len() as u64 == n => break,
            None if d.datatype()? == Type::Break => {
                d.skip()?;
                break;
            }
            _ => {}
        }
        out.push(item(d, field)?);
    }
    Ok(out)
}

fn read_text_array(d: &mut Decoder<'_>, field: &'static str) -> Result<Vec<String>, DecodeError> {
    read_array(d, field, read_text)
}

fn read_metadata(d: &mut Decoder<'_>, field: &'static str) -> Result<PeerMetadata, DecodeError> {
    let t = d.datatype()?;
    if !matches!(t, Type::Map | Type::MapIndef) {
        return Err(wrong(field, "a map", t));
    }
    let mut m = PeerMetadata::default();
    for_each_entry(d, |d, key| {
        match key {
            "storageId" => m.storage_id = opt(d, "storageId", read_text)?.map(StorageId::new),
            "isEphemeral" => m.is_ephemeral = opt(d, "isEphemeral", read_bool)?.unwrap_or(false),
            _ => d.skip()?,
        }
        Ok(())
    })?;
    Ok(m)
}

fn read_new_heads(
    d: &mut Decoder<'_>,
    field: &'static str,
) -> Result<BTreeMap<StorageId, RemoteHeads>, DecodeError> {
    let t = d.datatype()?;
    if !matches!(t, Type::Map | Type::MapIndef) {
        return Err(wrong(field, "a map", t));
    }
    let mut out = BTreeMap::new();
    for_each_entry(d, |d, storage| {
        let t = d.datatype()?;
        if !matches!(t, Type::Map | Type::MapIndef) {
            return Err(wrong(field, "a map of storage id to heads", t));
        }
        let mut heads = RemoteHeads {
            heads: Vec::new(),
            timestamp: 0.0,
        };
        for_each_entry(d, |d, key| {
            match key {
                "heads" => heads.heads = read_text_array(d, "newHeads.heads")?,
                "timestamp" => heads.timestamp = read_number(d, "newHeads.timestamp")?,
                _ => d.skip()?,
            }
            Ok(())
        })?;
        out.insert(StorageId::new(storage), heads);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerId {
        PeerId::new(s)
    }

    fn every_message_kind() -> Vec<Message> {
        let doc = DocumentId::random();
        let payload = SyncPayload {
            sender_id: peer("client"),
            target_id: peer("server"),
            document_id: doc,
            data: vec![0x42, 0, 0, 0],
        };
        vec![
            Message::Join {
                sender_id: peer("client"),
                metadata: Some(PeerMetadata {
                    storage_id: Some(StorageId::new("b0c3")),
                    is_ephemeral: false,
                }),
                supported_protocol_versions: Some(vec!["1".into()]),
            },
            Message::Join {
                sender_id: peer("bare"),
                metadata: None,
                supported_protocol_versions: None,
            },
            Message::Peer {
                sender_id: peer("server"),
                target_id: peer("client"),
                metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: true,
                }),
                selected_protocol_version: "1".into(),
            },
            Message::Error {
                sender_id: peer("server"),
                target_id: Some(peer("client")),
                message: "unsupported protocol version".into(),
            },
            Message::Leave {
                sender_id: peer("client"),
            },
            Message::Request(payload.clone()),
            Message::Sync(payload),
            Message::DocUnavailable {
                sender_id: peer("server"),
                target_id: peer("client"),
                document_id: doc,
            },
            Message::Ephemeral {
                sender_id: peer("client"),
                target_id: peer("server"),
                document_id: doc,
                session_id: "s1".into(),
                count: 7,
                data: vec![1, 2, 3],
            },
            Message::RemoteSubscriptionChange {
                sender_id: peer("client"),
                target_id: peer("server"),
                add: vec![StorageId::new("a")],
                remove: vec![],
            },
            Message::RemoteHeadsChanged {
                sender_id: peer("server"),
                target_id: peer("client"),
                document_id: doc,
                new_heads: BTreeMap::from([(
                    StorageId::new("a"),
                    RemoteHeads {
                        heads: vec!["3xyz".into()],
                        timestamp: 1_700_000_000_123.0,
                    },
                )]),
            },
        ]
    }

    proptest::proptest! {
        /// Any bytes at all decode to a message or an error, never a panic; so do valid frames
        /// with bytes flipped, truncated or appended.
        #[test]
        fn decoding_never_panics(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            which in 0usize..11,
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 0..4),
            cut in proptest::option::of(proptest::num::usize::ANY),
        ) {
            let _ = Message::decode(&noise);
            let mut frame = every_message_kind()[which].encode();
            for (at, value) in flips {
                let len = frame.len();
                frame[at % len] = value;
            }
            if let Some(cut) = cut {
                frame.truncate(cut % (frame.len() + 1));
            }
            let _ = Message::decode(&frame);
            frame.extend_from_slice(&noise);
            let _ = Message::decode(&frame);
        }
    }

    #[test]
    fn every_message_round_trips() {
        for message in every_message_kind() {
            let frame = message.encode();
            assert_eq!(Message::decode(&frame), Ok(message));
        }
    }

    /// Builds a frame by hand, the way a foreign encoder might.
    fn frame(build: impl FnOnce(&mut Encoder<Vec<u8>>)) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new());
        build(&mut e);
        e.into_writer()
    }

    #[test]
    fn tolerates_what_cbor_x_may_write() {
        let doc = DocumentId::random().to_string();
        let bytes = frame(|e| {
            e.begin_map().unwrap();
            e.str("count").unwrap().f64(3.0).unwrap();
            e.str("type").unwrap().str("ephemeral").unwrap();
            e.str("senderId").unwrap().str("a").unwrap();
            e.str("targetId").unwrap().str("b").unwrap();
            e.str("documentId").unwrap().str(&doc).unwrap();
            e.str("sessionId").unwrap().str("s").unwrap();
            e.str("data")
                .unwrap()
                .tag(Tag::new(64))
                .unwrap()
                .bytes(&[9])
                .unwrap();
            e.str("unknownKey")
                .unwrap()
                .begin_array()
                .unwrap()
                .u8(1)
                .unwrap()
                .end()
                .unwrap();
            e.u8(5).unwrap().str("non-text key").unwrap();
            e.str("somethingUndefined").unwrap().undefined().unwrap();
            e.end().unwrap();
        });
        match Message::decode(&bytes) {
            Ok(Message::Ephemeral { count, data, .. }) => {
                assert_eq!(count, 3);
                assert_eq!(data, vec![9]);
            }
            other => panic!("expected ephemeral, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_old_metadata_key_and_undefined_optionals() {
        let bytes = frame(|e| {
            e.map(4).unwrap();
            e.str("type").unwrap().str("join").unwrap();
            e.str("senderId").unwrap().str("old").unwrap();
            e.str("metadata").unwrap().map(1).unwrap();
            e.str("storageId").unwrap().undefined().unwrap();
            e.str("supportedProtocolVersions")
                .unwrap()
                .undefined()
                .unwrap();
        });
        assert_eq!(
            Message::decode(&bytes),
            Ok(Message::Join {
                sender_id: peer("old"),
                metadata: Some(PeerMetadata::default()),
                supported_protocol_versions: None,
            })
        );
    }

    #[test]
    fn rejects_each_class_of_malformed_frame() {
        let doc = DocumentId::random().to_string();
        assert!(matches!(
            Message::decode(&[0x1c]),
            Err(DecodeError::NotAMap)
        ));
        assert!(matches!(
            Message::decode(&[0xa1]),
            Err(DecodeError::Cbor(_))
        ));
        assert!(matches!(Message::decode(&[]), Err(DecodeError::Cbor(_))));
        assert_eq!(
            Message::decode(&frame(|e| {
                e.array(0).unwrap();
            })),
            Err(DecodeError::NotAMap)
        );
        assert_eq!(
            Message::decode(&frame(|e| {
                e.map(1)
                    .unwrap()
                    .str("type")
                    .unwrap()
                    .str("gossip")
                    .unwrap();
            })),
            Err(DecodeError::UnknownType("gossip".into()))
        );
        assert_eq!(
            Message::decode(&frame(|e| {
                e.map(1).unwrap().str("senderId").unwrap().str("x").unwrap();
            })),
            Err(DecodeError::MissingType)
        );
        let sync_with = |data: &dyn Fn(&mut Encoder<Vec<u8>>), id: &str| {
            frame(|e| {
                e.map(5).unwrap();
                e.str("type").unwrap().str("sync").unwrap();
                e.str("senderId").unwrap().str("a").unwrap();
                e.str("targetId").unwrap().str("b").unwrap();
                e.str("documentId").unwrap().str(id).unwrap();
                e.str("data").unwrap();
                data(e);
            })
        };
        assert!(matches!(
            Message::decode(&sync_with(
                &|e| {
                    e.str("not bytes").unwrap();
                },
                &doc
            )),
            Err(DecodeError::WrongType { field: "data", .. })
        ));
        assert!(matches!(
            Message::decode(&sync_with(
                &|e| {
                    e.bytes(&[0x42]).unwrap();
                },
                "not-an-id"
            )),
            Err(DecodeError::InvalidDocumentId(_))
        ));
        let missing_data = frame(|e| {
            e.map(4).unwrap();
            e.str("type").unwrap().str("request").unwrap();
            e.str("senderId").unwrap().str("a").unwrap();
            e.str("targetId").unwrap().str("b").unwrap();
            e.str("documentId").unwrap().str(&doc).unwrap();
        });
        assert_eq!(
            Message::decode(&missing_data),
            Err(DecodeError::MissingField {
                message_type: "request",
                field: "data"
            })
        );
        let negative_count = frame(|e| {
            e.map(2).unwrap();
            e.str("type").unwrap().str("ephemeral").unwrap();
            e.str("count").unwrap().f64(1.5).unwrap();
        });
        assert!(matches!(
            Message::decode(&negative_count),
            Err(DecodeError::WrongType { field: "count", .. })
        ));
        let mut trailing = Message::Leave {
            sender_id: peer("a"),
        }
        .encode();
        trailing.push(0);
        assert_eq!(Message::decode(&trailing), Err(DecodeError::TrailingBytes));
    }
}
