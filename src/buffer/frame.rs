//! The on-disk frame: one buffer record (one bulk batch), self-describing and checked.
//!
//! ```text
//! magic "SHB1" | flags u8 | records u32 | len u32 | header crc32 | payload crc32 | payload (len bytes)
//! ```
//! Integers are little-endian. The header CRC covers magic..len, so a damaged length is
//! never trusted; the payload CRC covers the payload. Decoding is pure so it can be fuzzed.

/// Marks the start of a frame; scanning for it resynchronises after damage.
pub const MAGIC: &[u8; 4] = b"SHB1";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 4 + 4 + 4;
/// The one frame size limit: the writer refuses a larger payload, the reader skips one
/// as damage (a damaged length must not allocate gigabytes). The settings keep every
/// batch under it (see `config::MAX_RECORD_BYTES_LIMIT`).
pub const MAX_PAYLOAD: u32 = 256 << 20;

/// Flag bit: the payload is gzip-compressed NDJSON.
pub const FLAG_GZIP: u8 = 1;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub records: u32,
    pub len: u32,
}

impl Header {
    pub fn gzip(&self) -> bool {
        self.flags & FLAG_GZIP != 0
    }

    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// Why bytes at some offset are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a frame (bad magic)")]
    Magic,
    #[error("frame header checksum mismatch")]
    HeaderCrc,
    #[error("frame payload length {0} is over the limit")]
    TooLong(u32),
    #[error("frame payload checksum mismatch ({records} records)")]
    PayloadCrc { records: u32 },
}

/// The header of a frame holding `payload`.
pub fn header(flags: u8, records: u32, payload: &[u8]) -> [u8; HEADER_LEN] {
    header_of_parts(flags, records, &[payload])
}

/// The header of a frame whose payload is `parts` one after the other.
pub fn header_of_parts(flags: u8, records: u32, parts: &[&[u8]]) -> [u8; HEADER_LEN] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut crc = crc32fast::Hasher::new();
    for p in parts {
        crc.update(p);
    }
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = flags;
    h[5..9].copy_from_slice(&records.to_le_bytes());
    h[9..13].copy_from_slice(&len.to_le_bytes());
    let hcrc = crc32fast::hash(&h[..13]);
    h[13..17].copy_from_slice(&hcrc.to_le_bytes());
    h[17..21].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// Appends a frame to `out`.
pub fn encode(out: &mut Vec<u8>, flags: u8, records: u32, payload: &[u8]) {
    out.extend_from_slice(&header(flags, records, payload));
    out.extend_from_slice(payload);
}

/// Decodes the header at the start of `bytes`. `Ok(None)`: not enough bytes yet (a torn
/// tail).
pub fn decode_header(bytes: &[u8]) -> Result<Option<Header>, FrameError> {
    if bytes.len() < 4 {
        return if MAGIC.starts_with(bytes) {
            Ok(None)
        } else {
            Err(FrameError::Magic)
        };
    }
    if &bytes[..4] != MAGIC {
        return Err(FrameError::Magic);
    }
    if bytes.len() < HEADER_LEN {
        return Ok(None);
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if crc32fast::hash(&bytes[..13]) != u32_at(13) {
        return Err(FrameError::HeaderCrc);
    }
    let h = Header {
        flags: bytes[4],
        records: u32_at(5),
        len: u32_at(9),
    };
    if h.len > MAX_PAYLOAD {
        return Err(FrameError::TooLong(h.len));
    }
    Ok(Some(h))
}

/// Checks the payload of a frame whose header is `h` and whose bytes start at `frame[0]`.
pub fn check_payload<'a>(h: &Header, frame: &'a [u8]) -> Result<&'a [u8], FrameError> {
    let crc = u32::from_le_bytes([frame[17], frame[18], frame[19], frame[20]]);
    let payload = &frame[HEADER_LEN..HEADER_LEN + h.len as usize];
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::PayloadCrc { records: h.records });
    }
    Ok(payload)
}

/// A valid frame found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub offset: u64,
    pub header: Header,
}

/// What [`scan`] had to skip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Damage {
    /// Damaged regions skipped.
    pub regions: u64,
    /// Bytes skipped (damaged regions and a torn tail).
    pub bytes: u64,
    /// Records known lost (frames whose header was intact but payload was not).
    pub records: u64,
    /// Bytes of an incomplete frame at the end (a write cut short by a crash).
    pub torn_tail: u64,
    /// Records of a frame whose header is intact but that ends past the segment's end:
    /// an append cut short. Synced appends move checkpoints only once whole, so these
    /// records are read again from the log files; lost only if appends were not synced.
    pub tail_records: u64,
}

/// Finds every valid frame in a segment's bytes, skipping damage. A frame whose header is
/// intact but whose payload is not is skipped by its own (checksummed) length; after a
/// damaged header, scanning resumes at the next magic that starts a valid frame. Bytes
/// after the last valid frame are a torn tail (a write cut short). Pure, so it can be
/// fuzzed.
pub fn scan(bytes: &[u8]) -> (Vec<Found>, Damage) {
    let mut found = Vec::new();
    let mut damage = Damage::default();
    let mut at = 0usize;
    let mut in_damage = false;
    while at < bytes.len() {
        let rest = &bytes[at..];
        // Ok(header), or Err((bytes to skip if known, records lost if known)).
        let result = match decode_header(rest) {
            Ok(Some(h)) if (rest.len() as u64) < h.frame_len() => {
                damage.tail_records += u64::from(h.records);
                Err((None, 0))
            }
            Ok(Some(h)) => match check_payload(&h, rest) {
                Ok(_) => Ok(h),
                Err(_) => Err((Some(h.frame_len() as usize), h.records)),
            },
            Ok(None) | Err(_) => Err((None, 0)),
        };
        match result {
            Ok(h) => {
                found.push(Found {
                    offset: at as u64,
                    header: h,
                });
                at += h.frame_len() as usize;
                in_damage = false;
            }
            Err((skip, lost)) => {
                if !in_damage {
                    damage.regions += 1;
                    in_damage = true;
                }
                damage.records += u64::from(lost);
                let next = skip.unwrap_or_else(|| {
                    memchr::memmem::find(&rest[1..], MAGIC).map_or(rest.len(), |i| i + 1)
                });
                damage.bytes += next as u64;
                at += next;
            }
        }
    }
    let good_end = found.last().map_or(0, |f| f.offset + f.header.frame_len());
    damage.torn_tail = bytes.len() as u64 - good_end;
    (found, damage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            encode(&mut out, 0, i as u32 + 1, p);
        }
        out
    }

    #[test]
    fn round_trip() {
        let bytes = frames(&[b"alpha", b"", b"gamma gamma"]);
        let (found, damage) = scan(&bytes);
        assert_eq!(damage, Damage::default());
        assert_eq!(found.len(), 3);
        assert_eq!(found[2].header.records, 3);
        let f = &found[2];
        let payload = check_payload(&f.header, &bytes[f.offset as usize..]).unwrap();
        assert_eq!(payload, b"gamma gamma");
    }

    #[test]
    fn torn_tail_is_reported() {
        let mut bytes = frames(&[b"alpha", b"beta"]);
        let full = bytes.len();
        bytes.truncate(full - 2);
        let (found, damage) = scan(&bytes);
        assert_eq!(found.len(), 1);
        assert!(damage.torn_tail > 0);
        assert_eq!(
            (damage.records, damage.tail_records),
            (0, 2),
            "the torn frame's header was intact: its 2 records were being appended"
        );
    }

    #[test]
    fn corrupt_payload_is_skipped_and_counted() {
        let mut bytes = frames(&[b"alpha", b"beta", b"gamma"]);
        let second = HEADER_LEN + 5;
        bytes[second + HEADER_LEN + 1] ^= 0xff;
        let (found, damage) = scan(&bytes);
        assert_eq!(
            found.iter().map(|f| f.header.records).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!((damage.regions, damage.records), (1, 2));
    }

    #[test]
    fn corrupt_header_resyncs_at_the_next_frame() {
        let mut bytes = frames(&[b"alpha", b"beta", b"gamma"]);
        bytes[HEADER_LEN + 5 + 6] ^= 0xff; // second frame's length
        let (found, damage) = scan(&bytes);
        assert_eq!(
            found.iter().map(|f| f.header.records).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(damage.regions, 1);
        let (found, _) = scan(&[b"garbage".as_slice(), &frames(&[b"x"])].concat());
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [
            &b""[..],
            b"S",
            b"SHB1",
            b"SHB1\x00\x00\x00\x00",
            &[0xffu8; 64][..],
        ] {
            let _ = scan(bytes);
            let _ = decode_header(bytes);
        }
    }
}
