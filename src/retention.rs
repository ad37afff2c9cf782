//! `shipper retention`: deletes the daily indices `<prefix>-YYYY.MM.DD` whose date is more
//! than N days before today (UTC), for each prefix given (with its own N, if it says
//! so). A prefix ending in `*` stands for every prefix that starts with the text before
//! it: the pattern of a route template (`logs-*` for `logs-{namespace}`).
//!
//! Uses only APIs every Elasticsearch since 5.x and every OpenSearch has: list with
//! `GET /_cat/indices/<prefix>-*?format=json&h=index`, then `DELETE /<index>` one index at
//! a time (by exact name: 8.x refuses wildcard deletes by default, and one failure must
//! not stop the others). The date comes from the index name, not from creation time, so
//! an index re-created by a late record is still deleted on schedule. Names that do not
//! match the pattern exactly (`logstash-foo`, rollover or data-stream backing indices)
//! are never touched, and an index belongs to one prefix only: `logs-shop-2024.07.08`
//! is prefix `logs-shop`'s (or `logs-*`'s), never `logs`'s.

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

    /// Indices are <PREFIX>-<DATE>; repeat for several prefixes. `PREFIX=DAYS` keeps
    /// that prefix's indices DAYS days instead of --keep-days; `logs-*` stands for every
    /// prefix that starts with `logs-` (a route template's pattern). An index belongs
    /// to the exact prefix that names it, else to the longest pattern that covers it.
    #[arg(long, value_name = "PREFIX[=DAYS]", default_value = DEFAULT_INDEX_PREFIX)]
    pub index_prefix: Vec<String>,

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
    #[error("--index-prefix `{0}` is not a plain index name prefix (or one with a trailing `*`), with an optional `=DAYS` of at least 1")]
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

/// One `--index-prefix`: a prefix, or the start of many (`logs-*`), and how many days
/// its indices are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// The prefix, or for a pattern the text before its `*`.
    pub text: String,
    pub pattern: bool,
    pub keep_days: u32,
}

impl Prefix {
    /// Parses `PREFIX[=DAYS]`; `keep_days` is the default.
    pub fn parse(arg: &str, keep_days: u32) -> Result<Prefix, RetentionError> {
        let bad = || RetentionError::Prefix(arg.to_owned());
        let (name, days) = match arg.split_once('=') {
            Some((n, d)) => (n, d.parse::<u32>().ok().filter(|&d| d > 0).ok_or_else(bad)?),
            None => (arg, keep_days),
        };
        let p = Prefix::of(name, days);
        let ok = if p.pattern {
            valid_prefix(p.text.trim_end_matches(['-', '_', '.', '+']))
        } else {
            valid_prefix(&p.text)
        };
        if !ok {
            return Err(bad());
        }
        Ok(p)
    }

    /// `name` (a prefix, or a pattern ending in `*`), unchecked: an index pattern the
    /// agent's routes produced.
    pub fn of(name: &str, keep_days: u32) -> Prefix {
        let (text, pattern) = match name.strip_suffix('*') {
            Some(t) => (t, true),
            None => (name, false),
        };
        Prefix {
            text: text.to_owned(),
            pattern,
            keep_days,
        }
    }

    /// The `_cat/indices` pattern that lists its indices.
    fn listing(&self) -> String {
        if self.pattern {
            format!("{}*", self.text)
        } else {
            format!("{}-*", self.text)
        }
    }

    /// Whether the name part `head` of `<head>-<date>` is this prefix's.
    fn owns(&self, head: &str) -> bool {
        if self.pattern {
            head.starts_with(&self.text)
        } else {
            head == self.text
        }
    }
}

/// Which prefix owns `index`, and the day its name says: `index` is `<head>-<date>`
/// exactly, and `head` is an exact prefix, else the longest pattern that covers it.
pub fn owner<'p>(
    index: &str,
    prefixes: &'p [Prefix],
    format: &DateFormat,
) -> Option<(&'p Prefix, NaiveDate)> {
    let split = index.len().checked_sub(format.rendered_len() + 1)?;
    if !index.is_char_boundary(split) || index.as_bytes()[split] != b'-' {
        return None;
    }
    let (head, date) = (&index[..split], &index[split + 1..]);
    let date = format.parse_date(date)?;
    let exact = prefixes.iter().find(|p| !p.pattern && p.owns(head));
    let pattern = || {
        prefixes
            .iter()
            .filter(|p| p.pattern && p.owns(head))
            .max_by_key(|p| p.text.len())
    };
    exact.or_else(pattern).map(|p| (p, date))
}

/// The first day kept: `keep_days` before today (the earliest date there is when that
/// is before it).
fn cutoff(today: NaiveDate, keep_days: u32) -> NaiveDate {
    today
        .checked_sub_days(chrono::Days::new(u64::from(keep_days)))
        .unwrap_or(NaiveDate::MIN)
}

/// The indices to delete: daily indices dated before `today - keep_days` of the prefix
/// that owns them, oldest first. With `keep_days = 7` on 2024-01-10, 2024-01-03 is kept
/// (it holds logs less than 7 days old) and 2024-01-02 is deleted.
pub fn expired<'a>(
    indices: &'a [String],
    prefixes: &[Prefix],
    format: &DateFormat,
    today: NaiveDate,
) -> Vec<&'a str> {
    let mut out: Vec<(NaiveDate, &str)> = indices
        .iter()
        .filter_map(|i| {
            let (p, d) = owner(i, prefixes, format)?;
            (d < cutoff(today, p.keep_days)).then_some((d, i.as_str()))
        })
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
    let prefixes = opts
        .index_prefix
        .iter()
        .map(|p| Prefix::parse(p, opts.keep_days))
        .collect::<Result<Vec<_>, _>>()?;
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
    let mut names = std::collections::BTreeSet::new();
    for p in &prefixes {
        let path = format!("/_cat/indices/{}?format=json&h=index", p.listing());
        let body = runtime.block_on(client.request_ok(Method::GET, &path))?;
        #[derive(serde::Deserialize)]
        struct Row {
            index: String,
        }
        let rows: Vec<Row> =
            serde_json::from_slice(&body).map_err(|e| RetentionError::Listing {
                url: format!("{}{path}", client.endpoint_url(0).trim_end_matches('/')),
                reason: e.to_string(),
            })?;
        names.extend(rows.into_iter().map(|r| r.index));
    }
    let names: Vec<String> = names.into_iter().collect();
    let owned: Vec<(&Prefix, &str)> = names
        .iter()
        .filter_map(|n| owner(n, &prefixes, &format).map(|(p, _)| (p, n.as_str())))
        .collect();
    let doomed = expired(&names, &prefixes, &format, today);
    let mut summary = Summary {
        daily: owned.len(),
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
    for p in &prefixes {
        let mine = |i: &&str| owned.iter().any(|(o, n)| *o == p && n == i);
        let daily = owned.iter().filter(|(o, _)| *o == p).count();
        let deleted = summary.deleted.iter().filter(|i| mine(&i.as_str())).count();
        let which = if p.pattern {
            format!("indices of pattern {}", p.listing())
        } else {
            format!("{} indices", p.listing())
        };
        writeln!(
            out,
            "{} {deleted} of {daily} daily {which} dated before {} (keeping {} days)",
            if opts.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            cutoff(today, p.keep_days).format("%Y.%m.%d"),
            p.keep_days
        )?;
    }
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

    fn prefixes(args: &[&str], keep_days: u32) -> Vec<Prefix> {
        args.iter()
            .map(|a| Prefix::parse(a, keep_days).unwrap())
            .collect()
    }

    /// The day of `index` if prefix `prefix` owns it.
    fn index_date(index: &str, prefix: &str, format: &DateFormat) -> Option<NaiveDate> {
        owner(index, &prefixes(&[prefix], 1), format).map(|(_, d)| d)
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
            "é",
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
        let today = d(2024, 1, 10);
        assert_eq!(
            expired(&names, &prefixes(&["logstash"], 7), &daily(), today),
            vec!["logstash-2023.12.01", "logstash-2024.01.02"]
        );
        assert!(expired(&names, &prefixes(&["logstash"], 60), &daily(), today).is_empty());
        assert!(expired(&names, &prefixes(&["logstash"], u32::MAX), &daily(), today).is_empty());
        assert_eq!(
            expired(&names, &prefixes(&["other"], 1), &daily(), today),
            vec!["other-2000.01.01"]
        );
    }

    #[test]
    fn each_index_belongs_to_one_prefix_with_its_own_days() {
        let names: Vec<String> = [
            "logs-2024.01.01",
            "logs-shop-2024.01.01",
            "logs-shop-2024.01.08",
            "logs-pay-2024.01.05",
            "logs-audit-2023.01.01",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let today = d(2024, 1, 10);
        // `logs` owns only `logs-<date>`: never `logs-shop-<date>`.
        assert_eq!(
            expired(&names, &prefixes(&["logs"], 3), &daily(), today),
            vec!["logs-2024.01.01"]
        );
        // A route template's pattern owns the routed prefixes; an exact prefix beats
        // it, and keeps its own days.
        let p = prefixes(&["logs=30", "logs-*=3", "logs-audit=400"], 7);
        assert_eq!(
            expired(&names, &p, &daily(), today),
            vec!["logs-shop-2024.01.01", "logs-pay-2024.01.05"]
        );
        let (owner_of, _) = owner("logs-shop-2024.01.08", &p, &daily()).unwrap();
        assert_eq!(owner_of.text, "logs-");
        // The longest pattern wins.
        let p = prefixes(&["logs-*=1", "logs-shop*=100"], 7);
        assert_eq!(
            expired(&names, &p, &daily(), today),
            vec!["logs-audit-2023.01.01", "logs-pay-2024.01.05"]
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
            expired(&names, &prefixes(&["logstash"], 7), &hourly, d(2024, 1, 10)),
            vec!["logstash-2024.01.02.23"]
        );
    }

    #[test]
    fn prefix_arguments() {
        assert!(valid_prefix("logstash") && valid_prefix("k8s-logs"));
        for bad in ["", "Logs", "a*", "a,b", "a/b", "-a", ".a", "a b"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
        for good in ["logs", "logs-*", "logs*", "logs=3", "logs-*=30"] {
            assert!(Prefix::parse(good, 7).is_ok(), "{good}");
        }
        for bad in ["logs=0", "logs=x", "*", "-*", "lo*gs", "logs**", "Logs-*"] {
            assert!(Prefix::parse(bad, 7).is_err(), "{bad}");
        }
        assert_eq!(Prefix::parse("logs-*=30", 7).unwrap().keep_days, 30);
        assert_eq!(Prefix::parse("logs", 7).unwrap().keep_days, 7);
    }
}
