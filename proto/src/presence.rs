//! Presence: who is looking at which board and task, carried in `ephemeral` messages.
//!
//! The payload of one presence `ephemeral` message is a CBOR map:
//!
//! ```text
//! { "presence": 1, "user": <text>, "task": <text> | null, "left": <bool> }
//! ```
//!
//! `user` is the viewer's user id, `task` the task they have open (null for the board itself),
//! `left: true` says they closed the board. A client repeats its presence while it views a
//! board, so receivers can expire a viewer who goes quiet. Ephemeral payloads that are not
//! presence maps (other applications may broadcast their own) decode to `None`, not an error.

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use crate::board::TaskId;

/// The presence payload format version this code writes.
const PRESENCE_V1: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub user: String,
    pub task: Option<TaskId>,
    pub left: bool,
}

impl Presence {
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
        e.map(4)?;
        e.str("presence")?.u64(PRESENCE_V1)?;
        e.str("user")?.str(&self.user)?;
        e.str("task")?;
        match &self.task {
            Some(task) => e.str(task.as_str())?,
            None => e.null()?,
        };
        e.str("left")?.bool(self.left)?;
        Ok(())
    }

    /// The presence in an ephemeral payload, or `None` when the payload is something else.
    pub fn decode(data: &[u8]) -> Option<Presence> {
        let mut d = Decoder::new(data);
        let len = d.map().ok()?;
        let mut version = None;
        let mut user = None;
        let mut task = None;
        let mut left = false;
        let mut remaining = len;
        loop {
            match remaining {
                Some(0) => break,
                Some(n) => remaining = Some(n - 1),
                None if d.datatype().ok()? == Type::Break => break,
                None => {}
            }
            match d.str().ok()? {
                "presence" => version = Some(d.u64().ok()?),
                "user" => user = Some(d.str().ok()?.to_owned()),
                "task" => match d.datatype().ok()? {
                    Type::Null | Type::Undefined => d.skip().ok()?,
                    _ => task = Some(TaskId::new(d.str().ok()?)),
                },
                "left" => left = d.bool().ok()?,
                _ => d.skip().ok()?,
            }
        }
        if version != Some(PRESENCE_V1) {
            return None;
        }
        Some(Presence {
            user: user?,
            task,
            left,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for presence in [
            Presence {
                user: "ann".into(),
                task: None,
                left: false,
            },
            Presence {
                user: "bob".into(),
                task: Some(TaskId::new("t1")),
                left: true,
            },
        ] {
            assert_eq!(Presence::decode(&presence.encode()), Some(presence));
        }
    }

    #[test]
    fn other_payloads_are_not_presence() {
        assert_eq!(Presence::decode(b""), None);
        assert_eq!(Presence::decode(&[0xa0]), None, "empty map has no version");
        // {"cursor": 3}: another application's ephemeral message.
        assert_eq!(
            Presence::decode(&[0xa1, 0x66, b'c', b'u', b'r', b's', b'o', b'r', 0x03]),
            None
        );
        // A future version is not misread.
        let mut future = Presence {
            user: "ann".into(),
            task: None,
            left: false,
        }
        .encode();
        let at = future
            .iter()
            .position(|b| *b == 0x01)
            .expect("version byte");
        future[at] = 0x02;
        assert_eq!(Presence::decode(&future), None);
    }
}
