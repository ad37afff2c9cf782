//! `shipper retention`: deletes the daily indices `<prefix>-YYYY.MM.DD` whose date is more
//! than N days before today (UTC).
//!
//! Uses only APIs every Elasticsearch since 5.x and every OpenSearch has: list with
//! `GET /_cat/indices/<prefix>-*?format=json&h=index`, then `DELETE /<index>` one index at
//! a time (by exact name: 8.x refuses wildcard deletes by default, and one failure must
//! not stop the others). The date comes from the index name, not from creation time, so
//! an index re-created by a late record is still deleted on schedule. Names that do not
//! match the pattern exactly (`logstash-foo`, rollover or data-stream backing indices)
//! are never touched.

use crate::config::{Elasticsearch, DEFAULT_INDEX_PREFIX};
use crate::index::DateFormat;
use crate::ship::client::{Client, ClientError};
use chrono::NaiveDate;
use reqwest::Method;
use std::path::PathBuf;

/// One request may take this long (a delete of a large index on a busy cluster).
const REQUEST_TIMEOUT_MS: u64 = 120_000;

/// Delete daily indices older than N days (run nightly by the generated CronJob).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Keep the indices of today and of the last DAYS days; delete older ones.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_days: u32,

    /// Elasticsearch or OpenSearch base URL.
    #[arg(long, value_name = "URL")]
    pub es_url: String,

    /// Indices are <PREFIX>-<DATE>.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_INDEX_PREFIX)]
    pub index_prefix: String,

    /// The date part of index names, as the agent's elasticsearch.index_date_format; it
    /// must name a day (%Y with %m and %d, or %j), e.g. %Y.%m.%d or %Y.%m.%d.%H.
    #[arg(long, value_name = "FORMAT", default_value = crate::index::DEFAULT_DATE_FORMAT)]
    pub date_format: String,

    /// PEM file of the CA that signed the server's certificate (the system roots are
    /// trusted too).
    #[arg(long, value_name = "FILE")]
    pub es_ca_file: Option<PathBuf>,

    /// Basic-auth user.
    #[arg(long, value_name = "USER", requires = "es_password_file")]
    pub es_username: Option<String>,

    /// File holding the basic-auth password (a Secret volume); one trailing newline is
    /// ignored.
    #[arg(long, value_name = "FILE", requires = "es_username")]
    pub es_password_file: Option<PathBuf>,

    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("--index-prefix `{0}` is not a plain index name prefix")]
    Prefix(String),
    #[error("--date-format: {0}")]
    DateFormat(String),
    #[error("--es-url `{0}` is not an http:// or https:// URL")]
    Url(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("GET {url}: unexpected response (not a JSON list of indices): {reason}")]
    Listing { url: String, reason: String },
    #[error("{failed} of {total} deletions failed (see above)")]
    Deletions { failed: usize, total: usize },
}

/// The day in a dated index's name, if `index` is exactly `<prefix>-<date>`.
pub fn index_date(index: &str, prefix: &str, format: &DateFormat) -> Option<NaiveDate> {
    format.parse_date(index.strip_prefix(prefix)?.strip_prefix('-')?)
}

/// The indices to delete: daily indices dated before `today - keep_days`, oldest first.
/// With `keep_days = 7` on 2024-01-10, 2024-01-03 is kept (it holds logs less than 7
/// days old) and 2024-01-02 is deleted.
pub fn expired<'a>(
    indices: &'a [String],
    prefix: &str,
    format: &DateFormat,
    today: NaiveDate,
    keep_days: u32,
) -> Vec<&'a str> {
    let cutoff = today - chrono::Days::new(u64::from(keep_days));
    let mut out: Vec<(NaiveDate, &str)> = indices
        .iter()
        .filter_map(|i| index_date(i, prefix, format).map(|d| (d, i.as_str())))
        .filter(|(d, _)| *d < cutoff)
        .collect();
    out.sort();
    out.into_iter().map(|(_, i)| i).collect()
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Daily indices found.
    pub daily: usize,
    /// Deleted (or, with --dry-run, to be deleted).
    pub deleted: Vec<String>,
}

fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with(['-', '_', '+', '.'])
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'+')
        })
}

/// The agent's Elasticsearch client (TLS, credentials, error chains in one place),
/// set up from the command's flags.
fn client(opts: &Options) -> Result<Client, RetentionError> {
    let base = opts.es_url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(RetentionError::Url(opts.es_url.clone()));
    }
    let es = Elasticsearch {
        urls: vec![base.to_owned()],
        ca_file: opts.es_ca_file.clone(),
        username: opts.es_username.clone(),
        password_file: opts.es_password_file.clone(),
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        ..Elasticsearch::default()
    };
    Ok(Client::new(&es)?)
}

/// Lists, selects and deletes; progress goes to `out`.
pub fn run(
    opts: &Options,
    today: NaiveDate,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<Summary> {
    if !valid_prefix(&opts.index_prefix) {
        return Err(RetentionError::Prefix(opts.index_prefix.clone()).into());
    }
    let format = DateFormat::parse(&opts.date_format).map_err(RetentionError::DateFormat)?;
    if !format.has_day() {
        return Err(RetentionError::DateFormat(format!(
            "{:?} does not name a day (needs %Y with %m and %d, or %j)",
            opts.date_format
        ))
        .into());
    }
    let client = client(opts)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = format!("/_cat/indices/{}-*?format=json&h=index", opts.index_prefix);
    let body = runtime.block_on(client.request_ok(Method::GET, &path))?;
    #[derive(serde::Deserialize)]
    struct Row {
        index: String,
    }
    let rows: Vec<Row> = serde_json::from_slice(&body).map_err(|e| RetentionError::Listing {
        url: format!("{}{path}", client.endpoint_url(0).trim_end_matches('/')),
        reason: e.to_string(),
    })?;
    let names: Vec<String> = rows.into_iter().map(|r| r.index).collect();
    let daily = names
        .iter()
        .filter(|n| index_date(n, &opts.index_prefix, &format).is_some())
        .count();
    let doomed = expired(&names, &opts.index_prefix, &format, today, opts.keep_days);
    let cutoff = today - chrono::Days::new(u64::from(opts.keep_days));
    let mut summary = Summary {
        daily,
        deleted: Vec::new(),
    };
    let mut failed = 0;
    for index in &doomed {
        if opts.dry_run {
            writeln!(out, "would delete {index}")?;
            summary.deleted.push((*index).to_owned());
            continue;
        }
        match runtime.block_on(client.request_ok(Method::DELETE, &format!("/{index}"))) {
            Ok(_) => {
                writeln!(out, "deleted {index}")?;
                summary.deleted.push((*index).to_owned());
            }
            Err(e) => {
                failed += 1;
                tracing::error!("deleting {index}: {e}");
                writeln!(out, "failed to delete {index}: {e}")?;
            }
        }
    }
    writeln!(
        out,
        "{} {} of {} daily {}-* indices dated before {} (keeping {} days)",
        if opts.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        summary.deleted.len(),
        daily,
        opts.index_prefix,
        cutoff.format("%Y.%m.%d"),
        opts.keep_days
    )?;
    if failed > 0 {
        return Err(RetentionError::Deletions {
            failed,
            total: doomed.len(),
        }
        .into());
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn daily() -> DateFormat {
        DateFormat::default()
    }

    #[test]
    fn dates_from_names() {
        assert_eq!(
            index_date("logstash-2024.01.02", "logstash", &daily()),
            Some(d(2024, 1, 2))
        );
        assert_eq!(
            index_date("k8s-logs-2024.12.31", "k8s-logs", &daily()),
            Some(d(2024, 12, 31))
        );
        for bad in [
            "logstash-2024.13.01",
            "logstash-2024.02.30",
            "logstash-2024.1.02",
            "logstash-2024-01-02",
            "logstash-2024.01.02-000001",
            "logstash-foo-2024.01.02",
            "logstash2024.01.02",
            ".ds-logstash-2024.01.02-000001",
            "logstash-+024.01.02",
            "logstash-2024.01.0é",
            "logstash-",
            "other-2024.01.02",
        ] {
            assert_eq!(index_date(bad, "logstash", &daily()), None, "{bad}");
        }
    }

    #[test]
    fn keeps_today_and_the_last_n_days() {
        let names: Vec<String> = [
            "logstash-2024.01.10",
            "logstash-2024.01.03",
            "logstash-2024.01.02",
            "logstash-2023.12.01",
            "logstash-2099.01.01",
            "logstash-foo",
            "other-2000.01.01",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            expired(&names, "logstash", &daily(), d(2024, 1, 10), 7),
            vec!["logstash-2023.12.01", "logstash-2024.01.02"]
        );
        assert!(expired(&names, "logstash", &daily(), d(2024, 1, 10), 60).is_empty());
        assert_eq!(
            expired(&names, "other", &daily(), d(2024, 1, 10), 1),
            vec!["other-2000.01.01"]
        );
    }

    #[test]
    fn hourly_indices_expire_by_day() {
        let hourly = DateFormat::parse("%Y.%m.%d.%H").unwrap();
        let names: Vec<String> = [
            "logstash-2024.01.02.23",
            "logstash-2024.01.03.00",
            "logstash-2024.01.02",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            expired(&names, "logstash", &hourly, d(2024, 1, 10), 7),
            vec!["logstash-2024.01.02.23"]
        );
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("logstash") && valid_prefix("k8s-logs"));
        for bad in ["", "Logs", "a*", "a,b", "a/b", "-a", ".a", "a b"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }
}
