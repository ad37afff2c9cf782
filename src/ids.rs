//! File identity: which file this is, independent of its path and inode, and the
//! record ids derived from it.
//!
//! identity = xxh3-128(source, first complete line). The source is the container (Docker
//! container id, or pod uid + container name for CRI) and the first line carries the
//! runtime's nanosecond timestamp, so the identity is the same after a rename, a restart
//! or a copy, and differs for a new file that reuses an inode or a copytruncated file.
//!
//! A host file's first line is no such fingerprint (a fixed header, a second-precision
//! syslog stamp: the next file at the same path may start with the very same line), so
//! a host file's identity is xxh3-128(path) salted with its place ([`Place`]: device,
//! inode and birth time), which a rename keeps and a new file never shares, and its
//! generation: how many times it was truncated and written again in that place. Its
//! checkpoint keeps both, and a hash of the bytes before its offset, which tell at a
//! restart whether the file still holds what was read (else it is the next generation)
//! and which file a copytruncate copy was made of (see [`crate::tail`]).
//!
//! Record ids derive from it: `_id` = base64url(xxh3-128(identity, offset)), 22 characters,
//! the same on any machine for the same bytes. xxh3 is not a cryptographic hash: ids assume
//! log content is not crafted to collide with another container's ids.

use base64::Engine;
use std::fmt;
use xxhash_rust::xxh3::xxh3_128;

/// The content identity of a log file.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId([u8; 16]);

/// Length of a record id in bytes (base64url of 128 bits, no padding).
pub const RECORD_ID_LEN: usize = 22;

impl FileId {
    pub fn compute(source: &str, first_line: &[u8]) -> FileId {
        let mut input = Vec::with_capacity(source.len() + 1 + first_line.len());
        input.extend_from_slice(source.as_bytes());
        input.push(0);
        input.extend_from_slice(first_line);
        FileId(xxh3_128(&input).to_be_bytes())
    }

    /// This fingerprint, salted with the place of the file that holds it and how many
    /// times that file was truncated and written again (host files).
    pub fn salted(self, place: Place, generation: u32) -> FileId {
        let mut input = [0u8; 44];
        input[..16].copy_from_slice(&self.0);
        input[16..24].copy_from_slice(&place.dev.to_be_bytes());
        input[24..32].copy_from_slice(&place.ino.to_be_bytes());
        input[32..40].copy_from_slice(&place.born_ns.to_be_bytes());
        input[40..].copy_from_slice(&generation.to_be_bytes());
        FileId(xxh3_128(&input).to_be_bytes())
    }

    pub fn from_bytes(b: [u8; 16]) -> FileId {
        FileId(b)
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<FileId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(FileId(b))
    }

    /// The `_id` of the record whose first byte is at `offset` in this file.
    pub fn record_id(&self, offset: u64) -> [u8; RECORD_ID_LEN] {
        let mut input = [0u8; 24];
        input[..16].copy_from_slice(&self.0);
        input[16..].copy_from_slice(&offset.to_be_bytes());
        let hash = xxh3_128(&input).to_be_bytes();
        let mut out = [0u8; RECORD_ID_LEN];
        // 16 bytes always encode to exactly 22 base64 characters without padding.
        let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(hash, &mut out);
        out
    }
}

/// Where a file lives, as long as it lives: a rename keeps it, a new file (even one
/// that reuses the inode) has another birth time. `born_ns` is 0 where the filesystem
/// does not record births (then device and inode alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub dev: u64,
    pub ino: u64,
    pub born_ns: u64,
}

impl Place {
    pub fn of(m: &std::fs::Metadata) -> Place {
        use std::os::unix::fs::MetadataExt;
        let born_ns = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Place {
            dev: m.dev(),
            ino: m.ino(),
            born_ns,
        }
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_across_runs_and_machines() {
        let id = FileId::compute("docker:abc", b"{\"log\":\"x\\n\"}");
        assert_eq!(
            id.to_hex(),
            FileId::from_hex(&id.to_hex()).unwrap().to_hex()
        );
        let rid = id.record_id(0);
        assert_eq!(rid.len(), 22);
        assert!(rid
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
        assert_ne!(id.record_id(0), id.record_id(1));
        assert_ne!(
            FileId::compute("docker:abd", b"x"),
            FileId::compute("docker:abc", b"x")
        );
        // The separator keeps (source, line) pairs apart.
        assert_ne!(FileId::compute("a", b"bc"), FileId::compute("ab", b"c"));
    }

    /// Pinned: a change here changes every `_id` users already have in Elasticsearch.
    /// The values were checked against Python's `xxhash` package (xxh3_128_digest).
    #[test]
    fn pinned_values() {
        let id = FileId::compute(
            "cri:uid/c",
            b"2024-07-08T03:42:57.123456789Z stdout F hello",
        );
        assert_eq!(id.to_hex(), PINNED_HEX);
        assert_eq!(
            std::str::from_utf8(&id.record_id(4096)).unwrap(),
            PINNED_RECORD_ID
        );
    }

    const PINNED_HEX: &str = "0e56c73051afed7e6f3ef13498c2ffe6";
    const PINNED_RECORD_ID: &str = "JLszsgNJEDE5y9hA4yyB6g";

    #[test]
    fn hex_rejects_garbage() {
        assert!(FileId::from_hex("").is_none());
        assert!(FileId::from_hex(&"g".repeat(32)).is_none());
        assert!(FileId::from_hex(&"é".repeat(16)).is_none());
        assert!(FileId::from_hex(&format!("+{}", "0".repeat(31))).is_none());
    }
}
