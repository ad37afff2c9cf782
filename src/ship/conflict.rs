//! Conflict-safe indexing: a document Elasticsearch refuses because of its parsed fields
//! (one app's `"status":"ok"` meeting another's `"status":200` in the same index) is sent
//! again, once, under the same `_id`, without those fields and with
//! `shipper.fields_rejected` saying why. Only if that is refused too does it go to the
//! dead-letter file.
//!
//! The encoder lists the keys it added under `shipper.fields`, so stripping them needs no
//! guessing and no knowledge of parsers here.

use serde_json::{Map, Value};

pub use crate::metrics::FieldsRejected as Reason;

/// The reason of a bulk item's error object, if it is about the mapping.
pub fn reason(error: &str) -> Option<Reason> {
    let v: Value = serde_json::from_str(error).ok()?;
    let kind = v.get("type")?.as_str()?;
    let reason = v.get("reason").and_then(Value::as_str).unwrap_or("");
    match kind {
        "mapper_parsing_exception" | "document_parsing_exception" => Some(Reason::MapperParsing),
        "strict_dynamic_mapping_exception" => Some(Reason::StrictMapping),
        // Only the ones about fields and mappings; others (a bad index name) are not
        // cured by dropping fields.
        "illegal_argument_exception"
            if ["field", "mapper", "mapping", "Limit of total fields"]
                .iter()
                .any(|w| reason.contains(w)) =>
        {
            Some(Reason::IllegalArgument)
        }
        _ => None,
    }
}

/// The document without the fields its `shipper.fields` lists, with
/// `shipper.fields_rejected` set to `why` (the error's type and reason, shortened).
/// `None` when the document added no fields (or is not a JSON object): nothing to strip.
pub fn strip(doc: &[u8], why: &str) -> Option<Vec<u8>> {
    let mut v: Map<String, Value> = serde_json::from_slice(doc).ok()?;
    let shipper = v.get_mut("shipper")?.as_object_mut()?;
    let Value::Array(added) = shipper.remove("fields")? else {
        return None;
    };
    let why: String = why.chars().take(512).collect();
    shipper.insert("fields_rejected".into(), Value::String(why));
    for key in added.iter().filter_map(Value::as_str) {
        v.remove(key);
    }
    serde_json::to_vec(&v).ok()
}

/// `type: reason` of a bulk item's error object, for `shipper.fields_rejected`.
pub fn describe(error: &str) -> String {
    let v: Value = serde_json::from_str(error).unwrap_or(Value::Null);
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("error");
    match v.get("reason").and_then(Value::as_str) {
        Some(r) => format!("{kind}: {r}"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        let e = |t: &str, r: &str| format!(r#"{{"type":"{t}","reason":"{r}"}}"#);
        assert_eq!(
            reason(&e(
                "mapper_parsing_exception",
                "failed to parse field [fields.status] of type [long]"
            )),
            Some(Reason::MapperParsing)
        );
        assert_eq!(
            reason(&e("document_parsing_exception", "[1:2] failed to parse")),
            Some(Reason::MapperParsing)
        );
        assert_eq!(
            reason(&e(
                "illegal_argument_exception",
                "Limit of total fields [1000] has been exceeded"
            )),
            Some(Reason::IllegalArgument)
        );
        assert_eq!(
            reason(&e(
                "illegal_argument_exception",
                "can't merge a non object mapping [fields.user] with an object mapping"
            )),
            Some(Reason::IllegalArgument)
        );
        assert_eq!(
            reason(&e(
                "strict_dynamic_mapping_exception",
                "mapping set to strict"
            )),
            Some(Reason::StrictMapping)
        );
        assert_eq!(
            reason(&e("illegal_argument_exception", "bad index name")),
            None
        );
        assert_eq!(reason(&e("version_conflict_engine_exception", "x")), None);
        assert_eq!(reason("not json"), None);
    }

    #[test]
    fn strips_exactly_the_listed_keys() {
        let doc = br#"{"@timestamp":"t","log":"{\"status\":\"ok\"}","stream":"stdout","fields":{"status":"ok"},"level":"info","kubernetes":{"pod_name":"p"},"shipper":{"metadata":"complete","fields":["fields","level"]}}"#;
        let out = strip(
            doc,
            "mapper_parsing_exception: failed to parse field [fields.status]",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "@timestamp": "t", "log": "{\"status\":\"ok\"}", "stream": "stdout",
                "kubernetes": {"pod_name": "p"},
                "shipper": {"metadata": "complete", "fields_rejected": "mapper_parsing_exception: failed to parse field [fields.status]"}
            })
        );
        assert_eq!(
            strip(&out, "again"),
            None,
            "a stripped document is not stripped twice"
        );
        assert_eq!(
            strip(br#"{"log":"x","shipper":{"metadata":"none"}}"#, "x"),
            None
        );
        assert_eq!(strip(b"garbage", "x"), None);
    }
}
