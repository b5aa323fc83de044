//! Identifiers that cross the wire: document ids, `automerge:` URLs, peer and storage ids.
//!
//! A document id is 16 random bytes written as base58check (base58 of the bytes followed by the
//! first four bytes of their double SHA-256), exactly as `@automerge/automerge-repo` writes them,
//! so ids minted by either side are accepted by the other.

use std::fmt;
use std::str::FromStr;

/// Why a document id or URL could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("document id is not valid base58check: {0}")]
    NotBase58Check(String),
    #[error("document id must encode 16 bytes, found {0}")]
    WrongLength(usize),
    #[error("automerge URL must start with `automerge:`")]
    NotAnAutomergeUrl,
    #[error("automerge URL has an invalid heads section: {0}")]
    InvalidHeads(String),
}

/// The 16-byte id of a document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    pub const LEN: usize = 16;

    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the bare base58check form (`3bFMGXUdqy5gnCKt3zxKRWeFzc4H`).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|e| IdError::NotBase58Check(e.to_string()))?;
        let array: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| IdError::WrongLength(bytes.len()))?;
        Ok(Self(array))
    }

    /// The `automerge:` URL of this document (no heads).
    pub fn url(&self) -> AutomergeUrl {
        AutomergeUrl {
            document_id: *self,
            heads: None,
        }
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `automerge:<documentId>[#<head>|<head>…]`, the form users paste and links carry.
///
/// Heads, when present, pin a version of the document; each is a base58-encoded change hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AutomergeUrl {
    pub document_id: DocumentId,
    pub heads: Option<Vec<automerge::ChangeHash>>,
}

impl AutomergeUrl {
    pub const SCHEME: &'static str = "automerge:";

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let rest = s
            .strip_prefix(Self::SCHEME)
            .ok_or(IdError::NotAnAutomergeUrl)?;
        let (id, heads) = match rest.split_once('#') {
            Some((id, heads)) => (id, Some(parse_heads(heads)?)),
            None => (rest, None),
        };
        Ok(Self {
            document_id: DocumentId::parse(id)?,
            heads,
        })
    }
}

fn parse_heads(s: &str) -> Result<Vec<automerge::ChangeHash>, IdError> {
    s.split('|')
        .map(|head| {
            let bytes = bs58::decode(head)
                .into_vec()
                .map_err(|e| IdError::InvalidHeads(e.to_string()))?;
            automerge::ChangeHash::try_from(bytes.as_slice())
                .map_err(|e| IdError::InvalidHeads(e.to_string()))
        })
        .collect()
}

impl fmt::Display for AutomergeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::SCHEME, self.document_id)?;
        if let Some(heads) = &self.heads {
            let encoded: Vec<String> = heads
                .iter()
                .map(|h| bs58::encode(h.0).into_string())
                .collect();
            write!(f, "#{}", encoded.join("|"))?;
        }
        Ok(())
    }
}

impl FromStr for AutomergeUrl {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A peer's self-chosen id (`senderId`/`targetId` on the wire). Arbitrary text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(String);

impl PeerId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a peer's durable storage (a UUID string in practice). Peers that keep the same
/// storage across connections present the same storage id, so sync state can be kept per storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageId(String);

impl StorageId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_id_written_by_the_js_client() {
        // From protocol-notes: an id minted by automerge-repo 2.5.6.
        let id = DocumentId::parse("3bFMGXUdqy5gnCKt3zxKRWeFzc4H").expect("valid id");
        assert_eq!(id.to_string(), "3bFMGXUdqy5gnCKt3zxKRWeFzc4H");
    }

    #[test]
    fn random_ids_round_trip_through_text_and_urls() {
        for _ in 0..100 {
            let id = DocumentId::random();
            assert_eq!(DocumentId::parse(&id.to_string()), Ok(id));
            let url = id.url();
            assert_eq!(AutomergeUrl::parse(&url.to_string()), Ok(url));
        }
    }

    #[test]
    fn rejects_a_corrupted_checksum() {
        let mut text = DocumentId::random().to_string().into_bytes();
        let last = text.last_mut().expect("non-empty");
        *last = if *last == b'2' { b'3' } else { b'2' };
        let text = String::from_utf8(text).expect("ascii");
        assert!(matches!(
            DocumentId::parse(&text),
            Err(IdError::NotBase58Check(_))
        ));
    }

    #[test]
    fn rejects_the_wrong_length_and_non_base58() {
        let short = bs58::encode([1u8; 8]).with_check().into_string();
        assert_eq!(DocumentId::parse(&short), Err(IdError::WrongLength(8)));
        assert!(matches!(
            DocumentId::parse("0OIl"),
            Err(IdError::NotBase58Check(_))
        ));
        assert!(DocumentId::parse("").is_err());
    }

    #[test]
    fn urls_need_the_scheme_and_may_pin_heads() {
        let id = DocumentId::random();
        assert_eq!(
            AutomergeUrl::parse(&id.to_string()),
            Err(IdError::NotAnAutomergeUrl)
        );
        let head = automerge::ChangeHash([7; 32]);
        let url = AutomergeUrl {
            document_id: id,
            heads: Some(vec![head]),
        };
        let parsed = AutomergeUrl::parse(&url.to_string()).expect("valid url");
        assert_eq!(parsed.heads, Some(vec![head]));
        assert!(matches!(
            AutomergeUrl::parse(&format!("automerge:{id}#notbase58!")),
            Err(IdError::InvalidHeads(_))
        ));
    }
}
