//! A log file's bytes by offset: a plain file read in place, or a gzip-compressed
//! rotation (kubelet's `0.log.<timestamp>.gz`) read through its decompressed stream.
//! Offsets are those of the decompressed bytes, so a line read from the `.gz` has the
//! offset, and therefore the document id, it had in the file before compression.

use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Whether a path names a gzip-compressed rotation.
pub fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// The bytes of one open file.
pub enum Content {
    Plain(File),
    /// Boxed: a decoder's state is large, and gzip files are rare.
    Gzip(Box<RefCell<Gzip>>),
}

/// A compressed file read forward through one decoder; reading behind the decoder
/// starts it again from the beginning (rare: a first-line check).
pub struct Gzip {
    file: File,
    decoder: Option<flate2::read::MultiGzDecoder<io::BufReader<File>>>,
    /// Decompressed bytes the decoder has produced.
    at: u64,
    /// Decompressed length, measured (one pass) the first time it is asked: a rotation
    /// no longer changes, and one that is never read need not be decompressed whole.
    len: Option<u64>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Plain(_) => f.write_str("Plain"),
            Content::Gzip(g) => write!(f, "Gzip(len {:?})", g.borrow().len),
        }
    }
}

impl Content {
    /// Opens `path`, through its decompressed stream if it is a `.gz` (decompressed only
    /// as far as it is read: a damaged archive is an error when its damage is reached).
    pub fn open(path: &Path) -> io::Result<(Content, Metadata)> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !is_gzip(path) {
            return Ok((Content::Plain(file), meta));
        }
        let g = Gzip {
            file,
            decoder: None,
            at: 0,
            len: None,
        };
        Ok((Content::Gzip(Box::new(RefCell::new(g))), meta))
    }

    /// When the file was last written.
    pub fn modified(&self) -> io::Result<std::time::SystemTime> {
        match self {
            Content::Plain(f) => f.metadata()?.modified(),
            Content::Gzip(g) => g.borrow().file.metadata()?.modified(),
        }
    }

    /// The length of the (decompressed) bytes.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            Content::Plain(f) => Ok(f.metadata()?.len()),
            Content::Gzip(g) => g.borrow_mut().len(),
        }
    }

    /// Reads at `offset` until `buf` is full or the bytes end. Returns the bytes read.
    pub fn read_full(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Content::Plain(f) => read_full(f, buf, offset),
            Content::Gzip(g) => g.borrow_mut().read_full(buf, offset),
        }
    }
}

impl Gzip {
    /// A decoder at the start of the stream.
    fn restart(&mut self) -> io::Result<&mut flate2::read::MultiGzDecoder<io::BufReader<File>>> {
        let mut f = self.file.try_clone()?;
        f.rewind()?;
        self.at = 0;
        Ok(self
            .decoder
            .insert(flate2::read::MultiGzDecoder::new(io::BufReader::new(f))))
    }

    /// The decompressed length (one pass over the file, the first time).
    fn len(&mut self) -> io::Result<u64> {
        if let Some(len) = self.len {
            return Ok(len);
        }
        let len = io::copy(self.restart()?, &mut io::sink())?;
        self.decoder = None;
        self.len = Some(len);
        Ok(len)
    }

    fn read_full(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if self.len.is_some_and(|len| offset >= len) {
            return Ok(0);
        }
        if self.decoder.is_none() || offset < self.at {
            self.restart()?;
        }
        let at = self.at;
        let Some(d) = self.decoder.as_mut() else {
            return Ok(0);
        };
        // Skip forward to `offset` (in the usual forward read, nothing to skip).
        let skipped = io::copy(&mut d.by_ref().take(offset - at), &mut io::sink())?;
        self.at += skipped;
        if self.at < offset {
            return Ok(0);
        }
        let mut n = 0;
        while n < buf.len() {
            match d.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// Reads at `offset` until `buf` is full or the file ends. Returns the bytes read.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(dir: &Path, name: &str, parts: &[&[u8]]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut out = Vec::new();
        // One gzip member per part: a concatenation is one stream to readers.
        for p in parts {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(p).unwrap();
            out.extend(e.finish().unwrap());
        }
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn a_gzip_reads_at_the_offsets_of_its_decompressed_bytes() {
        let d = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let (a, b) = text.split_at(10_000);
        let path = gz(d.path(), "0.log.20240708-034200.gz", &[a, b]);
        let (c, _) = Content::open(&path).unwrap();
        assert_eq!(c.len().unwrap(), text.len() as u64);
        let mut buf = vec![0; 4096];
        // Forward, backward (restart), across the member boundary, past the end.
        for off in [0u64, 8192, 100, 9_000, text.len() as u64 - 10] {
            let n = c.read_full(&mut buf, off).unwrap();
            let want = &text[off as usize..(off as usize + 4096).min(text.len())];
            assert_eq!(&buf[..n], want, "at {off}");
        }
        assert_eq!(c.read_full(&mut buf, text.len() as u64).unwrap(), 0);
    }

    #[test]
    fn a_damaged_gzip_is_an_error_when_read() {
        let d = tempfile::tempdir().unwrap();
        let path = gz(d.path(), "x.gz", &[&b"hello\n".repeat(1000)]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&path, bytes).unwrap();
        let (c, _) = Content::open(&path).unwrap();
        assert!(c.len().is_err());
        let mut buf = vec![0; 100];
        assert!(
            c.read_full(&mut buf, 5000).is_err(),
            "reading into the damage fails"
        );
        let plain = d.path().join("0.log");
        std::fs::write(&plain, b"abc\n").unwrap();
        let (c, _) = Content::open(&plain).unwrap();
        assert_eq!(c.len().unwrap(), 4);
    }
}
