//! Index names: `<prefix>-<date>` with a configurable date format, or one fixed name (a
//! data stream, or a single index).
//!
//! The date format is a small strftime subset, enough for the usual layouts (daily
//! `%Y.%m.%d`, hourly `%Y.%m.%d.%H`, monthly `%Y.%m`, ISO weekly `%G.%V`), checked at
//! start so a typo is a config error, not a stream of rejected documents. The date is
//! the record's `@timestamp` in UTC. Which prefix a file's records take is [`route`]'s.

pub mod route;

use crate::timestamp::Timestamp;

/// The default: daily indices, `2024.07.08`.
pub const DEFAULT_DATE_FORMAT: &str = "%Y.%m.%d";

/// One piece of a date format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Literal(u8),
    /// `%Y`: four-digit year.
    Year,
    /// `%y`: two-digit year.
    ShortYear,
    /// `%m`: month 01-12.
    Month,
    /// `%d`: day of the month 01-31.
    Day,
    /// `%H`: hour 00-23.
    Hour,
    /// `%j`: day of the year 001-366.
    DayOfYear,
    /// `%G`: ISO 8601 week-based year.
    IsoYear,
    /// `%V`: ISO 8601 week 01-53.
    IsoWeek,
}

/// A parsed, validated date format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    items: Vec<Item>,
    text: String,
}

/// Characters Elasticsearch does not allow in an index name.
fn forbidden(b: u8) -> bool {
    matches!(
        b,
        b'\\' | b'/' | b'*' | b'?' | b'"' | b'<' | b'>' | b'|' | b' ' | b',' | b'#' | b':'
    ) || b.is_ascii_uppercase()
        || b.is_ascii_control()
}

/// Checks an index prefix or data stream name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.starts_with(['-', '_', '+', '.']) {
        return Err(format!("{name:?} must not start with '-', '_', '+' or '.'"));
    }
    if name.len() > route::MAX_PREFIX_BYTES {
        return Err(format!(
            "{name:?} is longer than {} bytes",
            route::MAX_PREFIX_BYTES
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_uppercase() || (c.is_ascii() && forbidden(c as u8)))
    {
        return Err(format!(
            "{name:?} contains {c:?}; index names are lowercase without \\ / * ? \" < > | , # : or spaces"
        ));
    }
    Ok(())
}

impl DateFormat {
    /// Parses a format such as `%Y.%m.%d`.
    pub fn parse(text: &str) -> Result<DateFormat, String> {
        let mut items = Vec::new();
        let mut bytes = text.bytes();
        while let Some(b) = bytes.next() {
            if b != b'%' {
                if forbidden(b) {
                    return Err(format!(
                        "{text:?}: {:?} is not allowed in an index name",
                        b as char
                    ));
                }
                items.push(Item::Literal(b));
                continue;
            }
            items.push(match bytes.next() {
                Some(b'Y') => Item::Year,
                Some(b'y') => Item::ShortYear,
                Some(b'm') => Item::Month,
                Some(b'd') => Item::Day,
                Some(b'H') => Item::Hour,
                Some(b'j') => Item::DayOfYear,
                Some(b'G') => Item::IsoYear,
                Some(b'V') => Item::IsoWeek,
                Some(other) => {
                    return Err(format!(
                        "{text:?}: %{} is not supported (use %Y %y %m %d %H %j %G %V)",
                        other as char
                    ))
                }
                None => return Err(format!("{text:?} ends with a lone %")),
            });
        }
        if items.is_empty() {
            return Err("the date format is empty (for a single index, use a data stream or a fixed prefix with a date format such as %Y)".into());
        }
        Ok(DateFormat {
            items,
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn is_default(&self) -> bool {
        self.text == DEFAULT_DATE_FORMAT
    }

    /// Whether the format names a single day (or hour): what retention needs to know an
    /// index's age.
    pub fn has_day(&self) -> bool {
        let has = |i: Item| self.items.contains(&i);
        (has(Item::Year) || has(Item::ShortYear))
            && ((has(Item::Month) && has(Item::Day)) || has(Item::DayOfYear))
    }

    /// Bytes of a rendered date (every item has a fixed width).
    pub fn rendered_len(&self) -> usize {
        self.items
            .iter()
            .map(|i| match i {
                Item::Literal(_) => 1,
                Item::Year | Item::IsoYear => 4,
                Item::DayOfYear => 3,
                _ => 2,
            })
            .sum()
    }

    /// The day a rendered date names (`None` if `s` is not one), for retention. Needs
    /// [`DateFormat::has_day`].
    pub fn parse_date(&self, s: &str) -> Option<chrono::NaiveDate> {
        use chrono::format::{parse, Parsed, StrftimeItems};
        if s.len() != self.rendered_len() {
            return None;
        }
        // Exactly the shape rendered: literals in place, digits elsewhere (chrono alone
        // would take `2024.1.2` or a signed year).
        let mut at = 0;
        for item in &self.items {
            let width = match item {
                Item::Literal(c) => {
                    if s.as_bytes()[at] != *c {
                        return None;
                    }
                    at += 1;
                    continue;
                }
                Item::Year | Item::IsoYear => 4,
                Item::DayOfYear => 3,
                _ => 2,
            };
            if !s.as_bytes()[at..at + width].iter().all(u8::is_ascii_digit) {
                return None;
            }
            at += width;
        }
        let mut parsed = Parsed::new();
        parse(&mut parsed, s, StrftimeItems::new(&self.text)).ok()?;
        parsed.to_naive_date().ok()
    }

    /// Appends the date of a UTC timestamp to `out`.
    pub fn render(&self, t: &Timestamp, out: &mut Vec<u8>) {
        if self.is_default() {
            out.extend_from_slice(&t.index_date());
            return;
        }
        let b = t.as_bytes();
        let num = |r: std::ops::Range<usize>| -> u32 {
            b[r].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
        };
        // Only the ISO week and day-of-year items need the calendar.
        let date = || chrono::NaiveDate::from_ymd_opt(num(0..4) as i32, num(5..7), num(8..10));
        for item in &self.items {
            match *item {
                Item::Literal(c) => out.push(c),
                Item::Year => out.extend_from_slice(&b[0..4]),
                Item::ShortYear => out.extend_from_slice(&b[2..4]),
                Item::Month => out.extend_from_slice(&b[5..7]),
                Item::Day => out.extend_from_slice(&b[8..10]),
                Item::Hour => out.extend_from_slice(&b[11..13]),
                Item::DayOfYear => {
                    let doy = date().map_or(1, |d| chrono::Datelike::ordinal(&d));
                    out.extend_from_slice(format!("{doy:03}").as_bytes());
                }
                Item::IsoYear => {
                    // The ISO year of 0000-01-01 and -02 is -1: kept to four digits.
                    let y = date()
                        .map_or(1970, |d| chrono::Datelike::iso_week(&d).year())
                        .clamp(0, 9999);
                    out.extend_from_slice(format!("{y:04}").as_bytes());
                }
                Item::IsoWeek => {
                    let w = date().map_or(1, |d| chrono::Datelike::iso_week(&d).week());
                    out.extend_from_slice(format!("{w:02}").as_bytes());
                }
            }
        }
    }
}

impl Default for DateFormat {
    fn default() -> DateFormat {
        DateFormat::parse(DEFAULT_DATE_FORMAT).unwrap_or_else(|_| DateFormat {
            items: Vec::new(),
            text: String::new(),
        })
    }
}

/// Where documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `<prefix>-<date>`.
    Dated { prefix: String, format: DateFormat },
    /// One name: a data stream (or an index) that the server rolls over itself.
    Fixed(String),
}

impl Target {
    /// Daily indices `<prefix>-YYYY.MM.DD`.
    pub fn daily(prefix: &str) -> Target {
        Target::Dated {
            prefix: prefix.to_owned(),
            format: DateFormat::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(fmt: &str, ts: &str) -> String {
        let f = DateFormat::parse(fmt).unwrap();
        let t = Timestamp::parse(ts.as_bytes()).unwrap();
        let mut out = Vec::new();
        f.render(&t, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats() {
        let ts = "2021-01-03T05:06:07.123Z";
        assert_eq!(render("%Y.%m.%d", ts), "2021.01.03");
        assert_eq!(render("%Y.%m.%d.%H", ts), "2021.01.03.05");
        assert_eq!(render("%Y.%m", ts), "2021.01");
        assert_eq!(render("%y%m%d", ts), "210103");
        assert_eq!(render("%Y.%j", ts), "2021.003");
        // 3 January 2021 is in ISO week 53 of 2020.
        assert_eq!(render("%G.%V", ts), "2020.53");
        assert_eq!(render("w%V", "2024-07-08T00:00:00Z"), "w28");
        // Timestamps with an offset are normalised to UTC first.
        assert_eq!(
            render("%Y.%m.%d.%H", "2021-01-03T01:00:00+02:00"),
            "2021.01.02.23"
        );
    }

    #[test]
    fn bad_formats_and_names_are_errors() {
        assert!(DateFormat::parse("%Y.%m.%Q").unwrap_err().contains("%Q"));
        assert!(DateFormat::parse("%Y.%").unwrap_err().contains("lone %"));
        assert!(DateFormat::parse("%Y/%m").unwrap_err().contains("'/'"));
        assert!(
            DateFormat::parse("%Y.%M").is_err(),
            "minutes are not offered"
        );
        assert!(DateFormat::parse("").is_err());
        assert!(check_name("logstash").is_ok());
        assert!(check_name("logs-k8s.app+1").is_ok());
        assert!(check_name("Logs").is_err());
        assert!(check_name("_logs").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("").is_err());
        assert!(
            check_name("journ\u{c9}e").is_err(),
            "uppercase beyond ASCII"
        );
        assert!(check_name("journ\u{e9}e").is_ok());
    }

    #[test]
    fn dates_parse_back() {
        let d = |y, m, day| chrono::NaiveDate::from_ymd_opt(y, m, day);
        let f = DateFormat::parse("%Y.%m.%d").unwrap();
        assert_eq!(f.parse_date("2024.01.02"), d(2024, 1, 2));
        assert_eq!(f.parse_date("2024.1.2"), None);
        assert_eq!(f.parse_date("2024.13.02"), None);
        assert_eq!(f.parse_date("2024.01.02x"), None);
        let h = DateFormat::parse("%Y.%m.%d.%H").unwrap();
        assert_eq!(h.parse_date("2024.01.02.23"), d(2024, 1, 2));
        let j = DateFormat::parse("%Y-%j").unwrap();
        assert_eq!(j.parse_date("2024-032"), d(2024, 2, 1));
    }

    #[test]
    fn has_day() {
        assert!(DateFormat::parse("%Y.%m.%d").unwrap().has_day());
        assert!(DateFormat::parse("%Y.%m.%d.%H").unwrap().has_day());
        assert!(DateFormat::parse("%Y.%j").unwrap().has_day());
        assert!(!DateFormat::parse("%Y.%m").unwrap().has_day());
        assert!(!DateFormat::parse("%G.%V").unwrap().has_day());
    }
}
