//! Fixed-size records read lazily from a binary file with positional reads.
//!
//! CIFAR and STL-10 binaries are plain arrays of equal-sized records. Instead of loading the
//! whole file (STL-10's `unlabeled_X.bin` is 2.7 GB) each `get` reads one record at its offset.
//! Positional reads (`pread`) need no shared cursor, so one open file serves many threads, and a
//! file that shrinks after opening gives an I/O error rather than a crash (as a memory map would).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A file made of `count` records of `record_len` bytes each, with nothing before or after.
#[derive(Debug)]
pub struct RecordFile {
    path: PathBuf,
    file: File,
    record_len: usize,
    count: usize,
}

impl RecordFile {
    /// Opens `path` and checks that its size is a non-zero multiple of `record_len`.
    pub fn open(path: &Path, record_len: usize) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
        if len == 0 {
            bail!("{}: file is empty", path.display());
        }
        if len % record_len as u64 != 0 {
            bail!(
                "{}: wrong size, {len} bytes is not a whole number of {record_len}-byte records \
                 (truncated or not this format?)",
                path.display()
            );
        }
        Ok(Self { path: path.to_path_buf(), file, record_len, count: (len / record_len as u64) as usize })
    }

    /// Number of records.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Reads record `index` into `buf` (which must be `record_len` bytes long).
    pub fn read(&self, index: usize, buf: &mut [u8]) -> Result<()> {
        if index >= self.count || buf.len() != self.record_len {
            bail!("{}: record {index} out of range (file has {})", self.path.display(), self.count);
        }
        let offset = index as u64 * self.record_len as u64;
        read_exact_at(&self.file, buf, offset)
            .with_context(|| format!("{}: cannot read record {index}", self.path.display()))
    }

    /// Streams through the whole file once, returning the first `prefix` bytes of every record
    /// (e.g. the label bytes of CIFAR records) in record order.
    pub fn record_prefixes(&self, prefix: usize) -> Result<Vec<u8>> {
        let file = self.file.try_clone().with_context(|| format!("cannot reopen {}", self.path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut buf = vec![0u8; self.record_len];
        let mut out = Vec::with_capacity(self.count * prefix);
        for index in 0..self.count {
            reader
                .read_exact(&mut buf)
                .with_context(|| format!("{}: cannot read record {index}", self.path.display()))?;
            out.extend_from_slice(&buf[..prefix]);
        }
        Ok(out)
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads an optional text file of names, one per line (blank lines ignored). Returns `None`
/// when the file does not exist, and an error when it exists but does not hold `expected` names.
pub fn read_names(path: &Path, expected: usize) -> Result<Option<Vec<String>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != expected {
        bail!("{}: expected {expected} class names, found {}", path.display(), names.len());
    }
    Ok(Some(names))
}

/// Returns the first of `dir` and `dir/<sub>` (for each `sub`) that contains `probe`.
pub fn find_dir(dir: &Path, subdirs: &[&str], probe: &[&str]) -> Option<PathBuf> {
    std::iter::once(dir.to_path_buf())
        .chain(subdirs.iter().map(|s| dir.join(s)))
        .find(|d| probe.iter().any(|p| d.join(p).is_file()))
}
