//! The CloudEvents 1.0 structured-JSON envelope, exactly as upstream writes it (api spec §6.1).

use cloudevents::{AttributesReader, AttributesWriter};
use serde_json::{Map, Value};

use super::{EventError, pyjson};
use crate::models::Timestamp;

/// The default `source` attribute (upstream's `CLOUD_EVENTS_SOURCE`).
pub const DEFAULT_SOURCE: &str = "https://api.kernelci.org/";
/// The default `type` attribute.
pub const DEFAULT_TYPE: &str = "api.kernelci.org";
/// The `data` of a keep-alive message.
pub const BEEP: &str = "BEEP";
/// The extension attribute that carries an event's position in the event log, on real-time
/// messages. CloudEvents attribute names are lower-case letters and digits, so it is
/// `sequenceid`.
pub const SEQUENCE_ID_KEY: &str = "sequenceid";
/// The name upstream (and this project before it followed the CloudEvents naming rule) used for
/// [`SEQUENCE_ID_KEY`]: still read, never written, so readers work in a mixed deployment.
pub const LEGACY_SEQUENCE_ID_KEY: &str = "_sequence_id";

const CORE_KEYS: [&str; 6] = ["specversion", "id", "source", "type", "time", "data"];

/// One CloudEvent in structured mode, with upstream's key order.
///
/// [`CloudEvent::to_json`] writes `specversion, id, source, type, time, data`, then the
/// extension attributes in insertion order (e.g. `owner`), then `sequenceid` when set, with
/// Python's `json.dumps` separators and escaping. [`CloudEvent::from_json`] reads any
/// structured CloudEvent: other attributes (`datacontenttype`, `subject`, ...) are kept in
/// [`CloudEvent::extensions`], in the order they came; the sequence number is read from
/// `sequenceid` or, from older servers, `_sequence_id`.
///
/// ```
/// use kernelci::events::CloudEvent;
/// use serde_json::json;
///
/// let event = CloudEvent::new(json!({"op": "created"})).with_owner("bob").with_sequence_id(7);
/// let text = event.to_json();
/// assert!(text.starts_with(r#"{"specversion": "1.0", "id": ""#));
/// assert!(text.ends_with(r#""data": {"op": "created"}, "owner": "bob", "sequenceid": 7}"#));
/// assert_eq!(CloudEvent::from_json(&text).unwrap(), event);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// The CloudEvents version, `"1.0"`.
    pub specversion: String,
    /// A unique id: a random UUID v4 unless the publisher gave one.
    pub id: String,
    /// Where the event comes from.
    pub source: String,
    /// The event type.
    pub ty: String,
    /// When it was made (written as an aware UTC time, `...+00:00`).
    pub time: Option<Timestamp>,
    /// The payload (`null` when the JSON had none).
    pub data: Value,
    /// Extension and optional attributes (`owner`, ...), in order.
    pub extensions: Map<String, Value>,
    /// The event's position in the event log, on real-time messages only.
    pub sequence_id: Option<i64>,
}

impl CloudEvent {
    /// A new event with upstream's defaults: a fresh uuid4, [`DEFAULT_SOURCE`],
    /// [`DEFAULT_TYPE`] and the current time.
    pub fn new(data: Value) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".to_owned(),
            id: uuid4(),
            source: DEFAULT_SOURCE.to_owned(),
            ty: DEFAULT_TYPE.to_owned(),
            time: Some(Timestamp::now()),
            data,
            extensions: Map::new(),
            sequence_id: None,
        }
    }

    /// The keep-alive message: `data: "BEEP"`, no owner, no sequence id.
    pub fn beep() -> CloudEvent {
        CloudEvent::new(Value::String(BEEP.to_owned()))
    }

    /// Whether this is a keep-alive message (clients skip those).
    pub fn is_beep(&self) -> bool {
        self.data.as_str() == Some(BEEP)
    }

    /// With another `source`.
    pub fn with_source(mut self, source: impl Into<String>) -> CloudEvent {
        self.source = source.into();
        self
    }

    /// With another `type`.
    pub fn with_type(mut self, ty: impl Into<String>) -> CloudEvent {
        self.ty = ty.into();
        self
    }

    /// With an extension attribute added (or replaced, keeping its position).
    pub fn with_extension(mut self, name: impl Into<String>, value: Value) -> CloudEvent {
        self.extensions.insert(name.into(), value);
        self
    }

    /// With the `owner` extension, unless `owner` is empty (upstream omits empty owners).
    pub fn with_owner(self, owner: impl Into<String>) -> CloudEvent {
        let owner = owner.into();
        if owner.is_empty() {
            self
        } else {
            self.with_extension("owner", Value::String(owner))
        }
    }

    /// With the sequence number (`sequenceid`) of a real-time message.
    pub fn with_sequence_id(mut self, sequence_id: i64) -> CloudEvent {
        self.sequence_id = Some(sequence_id);
        self
    }

    /// Re-wrapped for a replay, as upstream does: a new id and the current time, no
    /// sequence number.
    pub fn rewrapped(&self) -> CloudEvent {
        CloudEvent {
            id: uuid4(),
            time: Some(Timestamp::now()),
            sequence_id: None,
            ..self.clone()
        }
    }

    /// The `owner` extension, when it is a string.
    pub fn owner(&self) -> Option<&str> {
        self.extensions.get("owner").and_then(Value::as_str)
    }

    /// The envelope as JSON text, byte for byte as upstream's `json.dumps` writes it.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push('{');
        let mut first = true;
        let mut key = |out: &mut String, k: &str| {
            if !first {
                out.push_str(", ");
            }
            first = false;
            pyjson::write_str(out, k);
            out.push_str(": ");
        };
        key(&mut out, "specversion");
        pyjson::write_str(&mut out, &self.specversion);
        key(&mut out, "id");
        pyjson::write_str(&mut out, &self.id);
        key(&mut out, "source");
        pyjson::write_str(&mut out, &self.source);
        key(&mut out, "type");
        pyjson::write_str(&mut out, &self.ty);
        if let Some(time) = &self.time {
            key(&mut out, "time");
            pyjson::write_str(&mut out, &aware_isoformat(time));
        }
        key(&mut out, "data");
        pyjson::write_value(&mut out, &self.data);
        for (name, value) in &self.extensions {
            key(&mut out, name);
            pyjson::write_value(&mut out, value);
        }
        if let Some(seq) = self.sequence_id {
            key(&mut out, SEQUENCE_ID_KEY);
            out.push_str(&seq.to_string());
        }
        out.push('}');
        out
    }

    /// The envelope as a JSON object, in the same key order as [`CloudEvent::to_json`].
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("specversion".into(), self.specversion.clone().into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("source".into(), self.source.clone().into());
        map.insert("type".into(), self.ty.clone().into());
        if let Some(time) = &self.time {
            map.insert("time".into(), aware_isoformat(time).into());
        }
        map.insert("data".into(), self.data.clone());
        for (name, value) in &self.extensions {
            map.insert(name.clone(), value.clone());
        }
        if let Some(seq) = self.sequence_id {
            map.insert(SEQUENCE_ID_KEY.into(), seq.into());
        }
        Value::Object(map)
    }

    /// Reads a structured-mode CloudEvent from JSON text.
    pub fn from_json(text: &str) -> Result<CloudEvent, EventError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| EventError::Invalid(format!("CloudEvent is not JSON: {e}")))?;
        CloudEvent::from_value(value)
    }

    /// Reads a structured-mode CloudEvent from a JSON object. `specversion`, `id`, `source` and
    /// `type` must be strings; `time` must be an ISO time when present; the sequence number
    /// (`sequenceid`, or the older `_sequence_id`) an integer.
    pub fn from_value(value: Value) -> Result<CloudEvent, EventError> {
        let Value::Object(mut map) = value else {
            return Err(EventError::Invalid(
                "CloudEvent must be a JSON object".into(),
            ));
        };
        let required = |name: &str| match map.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(EventError::Invalid(format!(
                "CloudEvent attribute '{name}' must be a string"
            ))),
            None => Err(EventError::Invalid(format!(
                "CloudEvent attribute '{name}' is missing"
            ))),
        };
        let specversion = required("specversion")?;
        let id = required("id")?;
        let source = required("source")?;
        let ty = required("type")?;
        let time = match map.get("time") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                Timestamp::parse(s)
                    .map_err(|e| EventError::Invalid(format!("CloudEvent time: {e}")))?,
            ),
            Some(_) => {
                return Err(EventError::Invalid(
                    "CloudEvent attribute 'time' must be a string".into(),
                ));
            }
        };
        let data = map.get("data").cloned().unwrap_or(Value::Null);
        let mut sequence_id = None;
        // The legacy name first, so that `sequenceid` wins when a message carries both.
        for key in [LEGACY_SEQUENCE_ID_KEY, SEQUENCE_ID_KEY] {
            match map.shift_remove(key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    sequence_id = Some(v.as_i64().ok_or_else(|| {
                        EventError::Invalid(format!("'{key}' must be an integer"))
                    })?)
                }
            }
        }
        for key in CORE_KEYS {
            map.shift_remove(key);
        }
        Ok(CloudEvent {
            specversion,
            id,
            source,
            ty,
            time,
            data,
            extensions: map,
            sequence_id,
        })
    }
}

impl TryFrom<CloudEvent> for cloudevents::Event {
    type Error = EventError;

    /// Converts to the `cloudevents-sdk` event. Extension values must be strings, integers or
    /// booleans (the CloudEvents type system); the sequence number becomes the integer
    /// extension `sequenceid`.
    fn try_from(ce: CloudEvent) -> Result<Self, EventError> {
        let mut event = cloudevents::Event::default();
        if ce.specversion != "1.0" {
            return Err(EventError::Invalid(format!(
                "unsupported CloudEvents specversion '{}'",
                ce.specversion
            )));
        }
        event.set_id(ce.id);
        event.set_source(ce.source);
        event.set_type(ce.ty);
        event.set_time(ce.time.map(|t| t.naive().and_utc()));
        let mut content_type = "application/json".to_owned();
        for (name, value) in ce.extensions {
            match (name.as_str(), value) {
                ("datacontenttype", Value::String(s)) => content_type = s,
                ("subject", Value::String(s)) => {
                    event.set_subject(Some(s));
                }
                ("dataschema", Value::String(s)) => {
                    let url = url::Url::parse(&s)
                        .map_err(|e| EventError::Invalid(format!("dataschema: {e}")))?;
                    event.set_dataschema(Some(url));
                }
                (_, Value::String(s)) => event.set_extension(&name, s),
                (_, Value::Bool(b)) => event.set_extension(&name, b),
                (_, Value::Number(n)) if n.is_i64() => {
                    event.set_extension(&name, n.as_i64().unwrap_or_default())
                }
                (_, other) => {
                    return Err(EventError::Invalid(format!(
                        "extension '{name}' = {other} is not a CloudEvents attribute type"
                    )));
                }
            }
        }
        if let Some(seq) = ce.sequence_id {
            event.set_extension(SEQUENCE_ID_KEY, seq);
        }
        event.set_data(content_type, ce.data);
        Ok(event)
    }
}

impl TryFrom<cloudevents::Event> for CloudEvent {
    type Error = EventError;

    /// Converts from the `cloudevents-sdk` event. Extensions come in name order (the SDK keeps
    /// them unordered); binary data must be JSON.
    fn try_from(event: cloudevents::Event) -> Result<Self, EventError> {
        let mut ce = CloudEvent {
            specversion: event.specversion().as_str().to_owned(),
            id: event.id().to_owned(),
            source: event.source().to_string(),
            ty: event.ty().to_owned(),
            time: event.time().map(|t| Timestamp::from_naive(t.naive_utc())),
            data: Value::Null,
            extensions: Map::new(),
            sequence_id: None,
        };
        ce.data = match event.data() {
            None => Value::Null,
            Some(cloudevents::Data::Json(v)) => v.clone(),
            Some(cloudevents::Data::String(s)) => Value::String(s.clone()),
            Some(cloudevents::Data::Binary(b)) => serde_json::from_slice(b)
                .map_err(|e| EventError::Invalid(format!("binary CloudEvent data: {e}")))?,
        };
        if let Some(ct) = event
            .datacontenttype()
            .filter(|ct| *ct != "application/json")
        {
            ce.extensions.insert("datacontenttype".into(), ct.into());
        }
        if let Some(schema) = event.dataschema() {
            ce.extensions
                .insert("dataschema".into(), schema.to_string().into());
        }
        if let Some(subject) = event.subject() {
            ce.extensions.insert("subject".into(), subject.into());
        }
        let mut extensions: Vec<_> = event.iter_extensions().collect();
        extensions.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in extensions {
            let value = match value {
                cloudevents::event::ExtensionValue::String(s) => Value::String(s.clone()),
                cloudevents::event::ExtensionValue::Boolean(b) => Value::Bool(*b),
                cloudevents::event::ExtensionValue::Integer(i) => Value::from(*i),
            };
            if name == SEQUENCE_ID_KEY || name == LEGACY_SEQUENCE_ID_KEY {
                if name == SEQUENCE_ID_KEY || ce.sequence_id.is_none() {
                    ce.sequence_id = value.as_i64();
                }
            } else {
                ce.extensions.insert(name.to_owned(), value);
            }
        }
        Ok(ce)
    }
}

/// Python's `datetime.isoformat()` on an aware UTC time: microseconds only when non-zero.
fn aware_isoformat(time: &Timestamp) -> String {
    format!("{time}+00:00")
}

/// A random (version 4) UUID in its hyphenated lowercase form (the `uuid` crate; the bytes
/// from [`crate::random::unique_bytes`], so it never fails: event ids need uniqueness only).
pub fn uuid4() -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&crate::random::unique_bytes(16));
    uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The attributes an event is logged with: its CloudEvent `id`, a fresh [`uuid4`], so that
/// every delivery of the event, live or replayed, to any subscriber, carries the same id.
pub fn logged_event_attributes() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(uuid4()));
    m
}

/// A stable UUID for an event logged without an `id` attribute (written before ids were
/// logged, or by upstream's API): a version 8 UUID holding the event document's 12-byte
/// ObjectId, so every delivery of that event still carries the same id.
pub fn legacy_event_uuid(object_id: [u8; 12]) -> String {
    let mut b = [0u8; 16];
    b[..12].copy_from_slice(&object_id);
    uuid::Builder::from_custom_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_envelope_bytes() {
        let mut event = CloudEvent::new(json!({"op": "created", "name": "é"}))
            .with_owner("bob")
            .with_sequence_id(42);
        event.id = "5c6f0a43-1d4e-4a6b-9b55-3f6c3f6a2e11".into();
        event.time = Some(Timestamp::parse("2024-01-04T10:48:39.974782").unwrap());
        assert_eq!(
            event.to_json(),
            r#"{"specversion": "1.0", "id": "5c6f0a43-1d4e-4a6b-9b55-3f6c3f6a2e11", "source": "https://api.kernelci.org/", "type": "api.kernelci.org", "time": "2024-01-04T10:48:39.974782+00:00", "data": {"op": "created", "name": "\u00e9"}, "owner": "bob", "sequenceid": 42}"#
        );
        event.time = Some(Timestamp::parse("2024-01-04T10:48:39").unwrap());
        assert!(
            event
                .to_json()
                .contains(r#""time": "2024-01-04T10:48:39+00:00""#)
        );
        assert_eq!(
            serde_json::from_str::<Value>(&event.to_json()).unwrap(),
            event.to_value()
        );
    }

    #[test]
    fn beep_has_no_owner_and_no_sequence() {
        let beep = CloudEvent::beep();
        assert!(beep.is_beep());
        let text = beep.to_json();
        assert!(text.contains(r#""data": "BEEP"}"#), "{text}");
        assert!(!text.contains("owner") && !text.contains("sequenceid"));
        assert!(!CloudEvent::new(json!("beep")).is_beep());
    }

    #[test]
    fn parses_any_structured_event() {
        let text = r#"{"specversion":"1.0","type":"t","source":"/s","id":"A","time":"2018-04-05T17:31:00Z",
            "datacontenttype":"application/json","comexampleextension1":"value","data":{"k":[1,2]}}"#;
        let event = CloudEvent::from_json(text).unwrap();
        assert_eq!(event.ty, "t");
        assert_eq!(event.data, json!({"k": [1, 2]}));
        assert_eq!(
            event.extensions.keys().collect::<Vec<_>>(),
            ["datacontenttype", "comexampleextension1"]
        );
        assert_eq!(event.time.unwrap().to_string(), "2018-04-05T17:31:00");
        assert!(event.sequence_id.is_none());
        // No data at all is fine; a missing required attribute is not.
        let no_data =
            CloudEvent::from_json(r#"{"specversion":"1.0","type":"t","source":"s","id":"1"}"#)
                .unwrap();
        assert_eq!(no_data.data, Value::Null);
        for bad in [
            "[]",
            "not json",
            r#"{"specversion":"1.0","source":"s","id":"1"}"#,
            r#"{"specversion":"1.0","type":null,"source":"s","id":"1"}"#,
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","time":"yesterday"}"#,
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","_sequence_id":"x"}"#,
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","sequenceid":"x"}"#,
        ] {
            let err = CloudEvent::from_json(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Invalid, "{bad}");
        }
    }

    #[test]
    fn converts_to_and_from_the_sdk_event() {
        let event = CloudEvent::new(json!({"a": 1}))
            .with_owner("bob")
            .with_extension("attempt", json!(3))
            .with_sequence_id(9);
        let sdk: cloudevents::Event = event.clone().try_into().unwrap();
        assert_eq!(sdk.id(), event.id);
        assert_eq!(
            sdk.extension("owner").map(ToString::to_string).as_deref(),
            Some("bob")
        );
        let back = CloudEvent::try_from(sdk).unwrap();
        assert_eq!(back.sequence_id, Some(9));
        assert_eq!(back.data, json!({"a": 1}));
        assert_eq!(back.owner(), Some("bob"));
        assert_eq!(back.time, event.time);
        let nested = CloudEvent::new(json!(1)).with_extension("x", json!({"no": "objects"}));
        assert!(cloudevents::Event::try_from(nested).is_err());
    }

    #[test]
    fn uuid4_shape() {
        let id = uuid4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid4(), id);
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        let logged = logged_event_attributes();
        assert_eq!(
            uuid::Uuid::parse_str(logged["id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        let oid = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let legacy = legacy_event_uuid(oid);
        assert_eq!(legacy, legacy_event_uuid(oid), "stable");
        assert_ne!(legacy, legacy_event_uuid([0; 12]));
        assert_eq!(uuid::Uuid::parse_str(&legacy).unwrap().get_version_num(), 8);
    }

    #[test]
    fn sequence_number_under_either_name() {
        let new = r#"{"specversion":"1.0","type":"t","source":"s","id":"1","sequenceid":5}"#;
        let old = r#"{"specversion":"1.0","type":"t","source":"s","id":"1","_sequence_id":6}"#;
        let both = r#"{"specversion":"1.0","type":"t","source":"s","id":"1","_sequence_id":6,"sequenceid":7}"#;
        assert_eq!(CloudEvent::from_json(new).unwrap().sequence_id, Some(5));
        let legacy = CloudEvent::from_json(old).unwrap();
        assert_eq!(legacy.sequence_id, Some(6));
        assert!(legacy.extensions.is_empty(), "{:?}", legacy.extensions);
        assert!(
            legacy.to_json().ends_with(r#""sequenceid": 6}"#),
            "written under the new name: {}",
            legacy.to_json()
        );
        assert_eq!(CloudEvent::from_json(both).unwrap().sequence_id, Some(7));
        // Through the SDK: the extension name is a valid CloudEvents name.
        let sdk: cloudevents::Event = CloudEvent::from_json(new).unwrap().try_into().unwrap();
        assert_eq!(
            sdk.extension(SEQUENCE_ID_KEY).map(ToString::to_string),
            Some("5".into())
        );
        let mut old_sdk = sdk.clone();
        old_sdk.remove_extension(SEQUENCE_ID_KEY);
        old_sdk.set_extension(LEGACY_SEQUENCE_ID_KEY, 9i64);
        assert_eq!(CloudEvent::try_from(old_sdk).unwrap().sequence_id, Some(9));
    }
}
