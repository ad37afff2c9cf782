//! Reading a `_bulk` response item by item. Pure, so it can be fuzzed.
//!
//! Every item is classified:
//! - 200/201: indexed; 409 on `create`: already there (a replay), which is success too.
//! - 429, 5xx, and 401/403/404/408 (credentials, a blocked or missing index: the
//!   cluster's problem, not the document's): retried, forever.
//! - other 4xx (400 `mapper_parsing_exception`, `illegal_argument_exception`, …): the
//!   document itself is rejected; it goes to the dead-letter file, never retried.
//!
//! A response that is not JSON, or whose item count differs from what was sent, is
//! treated as a failed request (retried whole), never as success.

use serde::Deserialize;
use serde_json::value::RawValue;

/// What became of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Indexed,
    Duplicate,
    Retry,
    Reject,
}

/// Classifies an item status.
pub fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Indexed,
        409 => Outcome::Duplicate,
        401 | 403 | 404 | 408 | 429 => Outcome::Retry,
        400..=499 => Outcome::Reject,
        _ => Outcome::Retry,
    }
}

/// The per-item result of a bulk request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub indexed: usize,
    pub duplicate: usize,
    /// Items to send again (by position in the request).
    pub retry: Vec<usize>,
    /// How many of the retried items were 429 (back-pressure).
    pub throttled: usize,
    /// Rejected items: (position, status, the error object as JSON).
    pub reject: Vec<(usize, u16, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    #[error("bulk response is not valid JSON: {0}")]
    Json(String),
    #[error("bulk response has {got} items for {sent} documents sent")]
    Count { sent: usize, got: usize },
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(default)]
    errors: bool,
    #[serde(borrow)]
    items: Vec<Item<'a>>,
}

/// `{"create": {...}}` (or `index`, `update`, `delete`): one key, any name.
#[derive(Deserialize)]
struct Item<'a>(#[serde(borrow)] std::collections::HashMap<&'a str, Status<'a>>);

#[derive(Deserialize)]
struct Status<'a> {
    status: u16,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// Parses the body of a 200 `_bulk` response for a request of `sent` documents.
pub fn parse(body: &[u8], sent: usize) -> Result<Report, BulkError> {
    if let Some(report) = all_ok(body, sent) {
        return Ok(report);
    }
    let resp: Response<'_> =
        serde_json::from_slice(body).map_err(|e| BulkError::Json(e.to_string()))?;
    if resp.items.len() != sent {
        return Err(BulkError::Count {
            sent,
            got: resp.items.len(),
        });
    }
    let mut r = Report::default();
    for (i, item) in resp.items.iter().enumerate() {
        let Some(st) = item.0.values().next() else {
            return Err(BulkError::Json(format!("item {i} is empty")));
        };
        match classify(st.status) {
            Outcome::Indexed => r.indexed += 1,
            Outcome::Duplicate => r.duplicate += 1,
            Outcome::Retry => {
                r.retry.push(i);
                r.throttled += usize::from(st.status == 429);
            }
            Outcome::Reject => {
                let err = st
                    .error
                    .map_or_else(|| String::from("null"), |e| e.get().to_owned());
                r.reject.push((i, st.status, err));
            }
        }
    }
    // `errors` is only a hint; the items decide. Keep the field read so a response that
    // claims success but carries failed items is still handled item by item.
    let _ = resp.errors;
    Ok(r)
}

/// The common case without a full parse: `"errors":false` near the start and exactly one
/// `"status":` per document sent. `errors:false` means every item succeeded.
fn all_ok(body: &[u8], sent: usize) -> Option<Report> {
    let head = &body[..body.len().min(128)];
    memchr::memmem::find(head, b"\"errors\":false")?;
    let count = memchr::memmem::find_iter(body, b"\"status\":").count();
    (count == sent && body.ends_with(b"}")).then(|| Report {
        indexed: sent,
        ..Report::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_created_fast_path() {
        let body = br#"{"took":3,"errors":false,"items":[{"create":{"_id":"a","status":201}},{"create":{"_id":"b","status":201}}]}"#;
        assert_eq!(
            parse(body, 2).unwrap(),
            Report {
                indexed: 2,
                ..Report::default()
            }
        );
        assert_eq!(parse(body, 3), Err(BulkError::Count { sent: 3, got: 2 }));
    }

    #[test]
    fn mixed_items() {
        let body = br#"{"errors":true,"items":[
            {"create":{"_id":"a","status":201}},
            {"create":{"_id":"b","status":409,"error":{"type":"version_conflict_engine_exception"}}},
            {"create":{"_id":"c","status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"create":{"_id":"d","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}},
            {"create":{"_id":"e","status":503}},
            {"create":{"_id":"f","status":403,"error":{"type":"cluster_block_exception"}}}]}"#;
        let r = parse(body, 6).unwrap();
        assert_eq!((r.indexed, r.duplicate, r.throttled), (1, 1, 1));
        assert_eq!(r.retry, vec![2, 4, 5]);
        assert_eq!(r.reject.len(), 1);
        assert_eq!(r.reject[0].0, 3);
        assert!(r.reject[0].2.contains("mapper_parsing_exception"));
    }

    #[test]
    fn garbage_is_an_error() {
        for body in [
            &b""[..],
            b"<html>502</html>",
            b"{\"errors\":false}",
            b"{\"items\":[{}]}",
        ] {
            assert!(
                parse(body, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let truncated = br#"{"errors":false,"items":[{"create":{"status":201}},{"cre"#;
        assert!(parse(truncated, 2).is_err());
    }
}
