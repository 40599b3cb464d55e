//! MongoDB-style object ids, carried on the wire as 24-character hex strings.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 12-byte object id: 4 bytes of seconds since the epoch, 5 random bytes fixed per process,
/// 3 bytes of a counter. Ids made by one process sort in creation order, like MongoDB's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId([u8; 12]);

/// Why a string is not an object id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid ObjectId, it must be a 12-byte input or a 24-character hex string")]
pub struct InvalidObjectId(pub String);

fn process_unique() -> &'static ([u8; 5], AtomicU32) {
    static STATE: OnceLock<([u8; 5], AtomicU32)> = OnceLock::new();
    STATE.get_or_init(|| {
        // Without an entropy source: time, pid and a counter; ids stay unique per process.
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&crate::random::unique_bytes(8));
        let mut unique = [0u8; 5];
        unique.copy_from_slice(&seed[..5]);
        let counter = u32::from_le_bytes([seed[5], seed[6], seed[7], 0]);
        (unique, AtomicU32::new(counter))
    })
}

impl ObjectId {
    /// A fresh id.
    pub fn new() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or_default();
        Self::from_parts(secs, process_unique().1.fetch_add(1, Ordering::Relaxed))
    }

    /// An id with the given creation second and counter, and this process's random part.
    /// Useful to build ids that sort in a known order.
    pub fn from_parts(secs: u32, counter: u32) -> Self {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&secs.to_be_bytes());
        bytes[4..9].copy_from_slice(&process_unique().0);
        bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
        ObjectId(bytes)
    }

    /// The id from its 12 raw bytes.
    pub const fn from_bytes(bytes: [u8; 12]) -> Self {
        ObjectId(bytes)
    }

    /// The 12 raw bytes.
    pub const fn bytes(&self) -> [u8; 12] {
        self.0
    }

    /// The creation time encoded in the id, in seconds since the epoch.
    pub fn timestamp_secs(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The 24-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 24-character hex form (either case).
    pub fn parse_str(s: &str) -> Result<Self, InvalidObjectId> {
        if s.len() != 24 {
            return Err(InvalidObjectId(s.to_owned()));
        }
        let mut bytes = [0u8; 12];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| InvalidObjectId(s.to_owned()))?;
        Ok(ObjectId(bytes))
    }
}

impl Default for ObjectId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for ObjectId {
    type Err = InvalidObjectId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_str(s)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'v> serde::de::Visitor<'v> for Visitor {
            type Value = ObjectId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 24-character hex object id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ObjectId, E> {
                ObjectId::parse_str(v).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'v>>(
                self,
                mut map: A,
            ) -> Result<ObjectId, A::Error> {
                // MongoDB extended JSON: {"$oid": "..."}.
                let mut oid = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "$oid" {
                        let s: String = map.next_value()?;
                        oid = Some(ObjectId::parse_str(&s).map_err(serde::de::Error::custom)?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                oid.ok_or_else(|| serde::de::Error::custom("expected {\"$oid\": ...}"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for ObjectId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ObjectId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{24}$",
            "description": "An object id: 24 hexadecimal digits",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let id = ObjectId::new();
        assert_eq!(ObjectId::parse_str(&id.to_hex()).unwrap(), id);
        assert_eq!(id.to_hex().len(), 24);
        let upper = "65BB6A0A8E0F0D7D0C1B2A3F";
        assert_eq!(
            ObjectId::parse_str(upper).unwrap().to_hex(),
            upper.to_lowercase()
        );
        let err = ObjectId::parse_str("zz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "'zz' is not a valid ObjectId, it must be a 12-byte input or a 24-character hex string"
        );
        assert!(ObjectId::parse_str("65bb6a0a8e0f0d7d0c1b2a3g").is_err());
    }

    #[test]
    fn ids_sort_in_creation_order() {
        let a = ObjectId::new();
        let b = ObjectId::new();
        assert!(a < b, "{a} < {b}");
        assert!(a.to_hex() < b.to_hex());
    }

    #[test]
    fn serde_accepts_string_and_extended_json() {
        let id: ObjectId = serde_json::from_str("\"65bb6a0a8e0f0d7d0c1b2a3f\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"65bb6a0a8e0f0d7d0c1b2a3f\""
        );
        let ext: ObjectId = serde_json::from_str(r#"{"$oid":"65bb6a0a8e0f0d7d0c1b2a3f"}"#).unwrap();
        assert_eq!(ext, id);
        assert!(serde_json::from_str::<ObjectId>("12").is_err());
    }
}
