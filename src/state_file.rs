//! The format of the agent's small state files (checkpoints, the metadata snapshot): a
//! header line `<magic> <version> <crc32 of the body, hex>` and a JSON body. The magic
//! says which file it is, the version lets a newer build refuse an older layout, and the
//! checksum catches a torn or damaged body. Files are written with [`write_atomic`]: a
//! crash leaves either the old or the new file, whole.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} is not a {kind} (bad header)")]
    Header { path: PathBuf, kind: &'static str },
    #[error("{path} has version {found}, this build reads version {want}")]
    Version {
        path: PathBuf,
        found: u32,
        want: u32,
    },
    #[error("{path} is corrupt (checksum mismatch)")]
    Checksum { path: PathBuf },
    #[error("{path} is corrupt: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One kind of state file.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// For errors: "checkpoint file", "metadata snapshot".
    pub name: &'static str,
    pub magic: &'static str,
    pub version: u32,
}

impl Kind {
    /// Checks the header of `bytes` (read from `path`) and parses the JSON body.
    pub fn decode<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<T, StateFileError> {
        let path = || path.to_owned();
        let json = decode(self.magic, self.version, bytes).map_err(|e| match e {
            HeaderError::Header => StateFileError::Header {
                path: path(),
                kind: self.name,
            },
            HeaderError::Version(found) => StateFileError::Version {
                path: path(),
                found,
                want: self.version,
            },
            HeaderError::Checksum => StateFileError::Checksum { path: path() },
        })?;
        serde_json::from_slice(json).map_err(|source| StateFileError::Json {
            path: path(),
            source,
        })
    }

    /// Header line + JSON body.
    pub fn encode(&self, json: &[u8]) -> Vec<u8> {
        encode(self.magic, self.version, json)
    }
}

/// Why bytes are not a state file of the expected kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// No header line, or another magic.
    Header,
    /// The right file, another layout version.
    Version(u32),
    /// The body does not match its checksum.
    Checksum,
}

/// Header line + body.
pub fn encode(magic: &str, version: u32, json: &[u8]) -> Vec<u8> {
    let mut out = format!("{magic} {version} {:08x}\n", crc32fast::hash(json)).into_bytes();
    out.extend_from_slice(json);
    out
}

/// Checks the header and returns the body. Pure, so it can be fuzzed.
pub fn decode<'a>(magic: &str, version: u32, bytes: &'a [u8]) -> Result<&'a [u8], HeaderError> {
    let nl = memchr::memchr(b'\n', bytes).ok_or(HeaderError::Header)?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| HeaderError::Header)?;
    let mut parts = header.split(' ');
    if parts.next() != Some(magic) {
        return Err(HeaderError::Header);
    }
    let found: u32 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or(HeaderError::Header)?;
    if found != version {
        return Err(HeaderError::Version(found));
    }
    let crc = parts
        .next()
        .filter(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or(HeaderError::Header)?;
    if parts.next().is_some() {
        return Err(HeaderError::Header);
    }
    let body = &bytes[nl + 1..];
    if crc32fast::hash(body) != crc {
        return Err(HeaderError::Checksum);
    }
    Ok(body)
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let f = encode("x-file", 3, b"{}");
        assert_eq!(decode("x-file", 3, &f), Ok(&b"{}"[..]));
        assert_eq!(decode("y-file", 3, &f), Err(HeaderError::Header));
        assert_eq!(decode("x-file", 4, &f), Err(HeaderError::Version(3)));
        let mut bad = f.clone();
        *bad.last_mut().unwrap() = b']';
        assert_eq!(decode("x-file", 3, &bad), Err(HeaderError::Checksum));
        assert_eq!(
            decode("x-file", 3, b"x-file 3 +0000000\n{}"),
            Err(HeaderError::Header)
        );
        assert_eq!(decode("x-file", 3, b""), Err(HeaderError::Header));
    }
}
