//! Downloads the public data sets of [`crate::datasets`] from their canonical URLs, verifies
//! their MD5 checksums (the values published by the data set authors and used by torchvision),
//! and extracts tarballs.
//!
//! Every file is written to a hidden temporary file in the destination folder and renamed into
//! place only after its size and checksum are verified, so an interrupted or corrupted download
//! never leaves a file that looks complete. Archives are extracted into a temporary folder and
//! moved into place the same way.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use crate::datasets::{canonical_name, Split};

/// One file of a data set source.
#[derive(Clone, Copy, Debug)]
pub struct Resource {
    /// File name, appended to the base URL.
    pub file: &'static str,
    /// Expected MD5, lowercase hex.
    pub md5: &'static str,
    /// A `.tar.gz` to extract into the data folder (otherwise kept as is in `subdir`).
    pub extract: bool,
}

/// Where and what to download for one data set.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    /// Canonical data set name (as in [`crate::datasets::DATASET_NAMES`]).
    pub name: &'static str,
    /// URL prefix of every resource, ending in `/`.
    pub base_url: &'static str,
    /// Sub-folder of the data folder receiving non-archive files (`""`: the folder itself).
    pub subdir: &'static str,
    pub resources: &'static [Resource],
}

const fn tarball(file: &'static str, md5: &'static str) -> Resource {
    Resource { file, md5, extract: true }
}

const fn plain(file: &'static str, md5: &'static str) -> Resource {
    Resource { file, md5, extract: false }
}

/// The downloadable data sets. Checksums: cs.toronto.edu/~kriz/cifar.html (CIFAR), torchvision
/// (STL-10, MNIST mirror), zalandoresearch/fashion-mnist README (Fashion-MNIST).
pub const SOURCES: [Source; 5] = [
    Source {
        name: "cifar10",
        base_url: "https://www.cs.toronto.edu/~kriz/",
        subdir: "",
        resources: &[tarball("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")],
    },
    Source {
        name: "cifar100",
        base_url: "https://www.cs.toronto.edu/~kriz/",
        subdir: "",
        resources: &[tarball("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8")],
    },
    Source {
        name: "stl10",
        base_url: "http://ai.stanford.edu/~acoates/stl10/",
        subdir: "",
        resources: &[tarball("stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb")],
    },
    Source {
        name: "mnist",
        base_url: "https://ossci-datasets.s3.amazonaws.com/mnist/",
        subdir: "mnist",
        resources: &[
            plain("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            plain("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            plain("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            plain("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ],
    },
    Source {
        name: "fashion-mnist",
        base_url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        subdir: "fashion-mnist",
        resources: &[
            plain("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            plain("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            plain("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            plain("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ],
    },
];

/// The source of data set `name`, or an error listing the downloadable ones.
pub fn source(name: &str) -> Result<&'static Source> {
    let names = || SOURCES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ");
    let canonical = canonical_name(name).with_context(|| format!("downloadable data sets: {}", names()))?;
    SOURCES
        .iter()
        .find(|s| s.name == canonical)
        .with_context(|| format!("data set {name:?} cannot be downloaded; downloadable: {}", names()))
}

/// Options of [`download`].
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Replaces the source's base URL (a mirror, or a local server in tests).
    pub base_url: Option<String>,
    /// Replaces expected MD5s, by file name.
    pub checksums_override: HashMap<String, String>,
    /// Download even when the data set already opens from the folder.
    pub force: bool,
    /// Keep `.tar.gz` archives after extraction.
    pub keep_archives: bool,
    /// Show a progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self { base_url: None, checksums_override: HashMap::new(), force: false, keep_archives: false, progress: true }
    }
}

/// Downloads, verifies and extracts data set `name` into `dir` (created if needed). Returns
/// `dir`, ready for [`crate::datasets::open`]. Does nothing when the data set already opens
/// from `dir`, unless `opts.force`.
pub fn download(name: &str, dir: &Path, opts: &DownloadOptions) -> Result<PathBuf> {
    let src = source(name)?;
    if !opts.force && crate::datasets::open(src.name, dir, Split::Test).is_ok() {
        return Ok(dir.to_path_buf());
    }
    let target_dir = dir.join(src.subdir);
    std::fs::create_dir_all(&target_dir).with_context(|| format!("cannot create {}", target_dir.display()))?;
    let base = opts.base_url.as_deref().unwrap_or(src.base_url);
    for res in src.resources {
        let md5 = opts.checksums_override.get(res.file).map(String::as_str).unwrap_or(res.md5);
        let dest = target_dir.join(res.file);
        let url = format!("{}/{}", base.trim_end_matches('/'), res.file);
        let present = !opts.force && dest.is_file() && md5_file(&dest)?.eq_ignore_ascii_case(md5);
        if !present {
            fetch_verified(&url, &dest, md5, opts.progress)?;
        }
        if res.extract {
            extract_tar_gz(&dest, &target_dir)?;
            if !opts.keep_archives {
                std::fs::remove_file(&dest).with_context(|| format!("cannot remove {}", dest.display()))?;
            }
        }
    }
    Ok(dir.to_path_buf())
}

/// MD5 of `bytes`, lowercase hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// MD5 of the file at `path`, lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Md5::new();
    io::copy(&mut file, &mut hasher).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes through to a file while hashing and counting.
struct HashingWriter<W> {
    inner: W,
    hasher: Md5,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Downloads `url` to `dest`, checking the length announced by the server and the MD5.
/// The data goes to a hidden `.part` temporary file next to `dest`, deleted on any failure and
/// renamed to `dest` only once verified.
pub fn fetch_verified(url: &str, dest: &Path, md5: &str, progress: bool) -> Result<()> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".part")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().with_context(|| format!("downloading {url}"))?;
    let (_, mut body) = response.into_parts();
    let expected_len = body.content_length();
    let bar = if progress {
        let bar = expected_len.map_or_else(ProgressBar::no_length, ProgressBar::new);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(file_name.clone());
        bar
    } else {
        ProgressBar::hidden()
    };
    let file = tmp.as_file().try_clone().with_context(|| format!("cannot reopen {}", tmp.path().display()))?;
    let mut writer = HashingWriter { inner: io::BufWriter::new(file), hasher: Md5::new(), bytes: 0 };
    let mut reader = bar.wrap_read(body.as_reader());
    let copied = io::copy(&mut reader, &mut writer);
    bar.finish_and_clear();
    copied.with_context(|| format!("downloading {url}: transfer failed after {} bytes", writer.bytes))?;
    let HashingWriter { inner, hasher, bytes } = writer;
    inner.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", tmp.path().display()))?;
    if let Some(len) = expected_len {
        if bytes != len {
            bail!("downloading {url}: connection closed after {bytes} of {len} bytes");
        }
    }
    let actual = hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(md5) {
        // `tmp` is deleted when dropped.
        bail!("{}: checksum mismatch for {url}: expected md5 {md5}, got {actual} (download deleted)", dest.display());
    }
    tmp.as_file().sync_all().with_context(|| format!("cannot sync {}", tmp.path().display()))?;
    tmp.persist(dest).with_context(|| format!("cannot rename download to {}", dest.display()))?;
    Ok(())
}

/// Extracts a `.tar.gz` into `dir`: entries are unpacked into a temporary folder inside `dir`
/// (entries escaping it via `..` or absolute paths are refused by `tar`) and the top-level
/// entries are then moved into `dir`, replacing older copies.
pub fn extract_tar_gz(archive: &Path, dir: &Path) -> Result<()> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary folder in {}", dir.display()))?;
    tar::Archive::new(GzDecoder::new(file))
        .unpack(tmp.path())
        .with_context(|| format!("{}: cannot extract archive", archive.display()))?;
    let entries = std::fs::read_dir(tmp.path()).with_context(|| format!("cannot list {}", tmp.path().display()))?;
    for entry in entries {
        let from = entry.with_context(|| format!("cannot list {}", tmp.path().display()))?.path();
        let Some(name) = from.file_name() else {
            continue;
        };
        let to = dir.join(name);
        if to.is_dir() {
            std::fs::remove_dir_all(&to).with_context(|| format!("cannot replace {}", to.display()))?;
        } else if to.exists() {
            std::fs::remove_file(&to).with_context(|| format!("cannot replace {}", to.display()))?;
        }
        std::fs::rename(&from, &to).with_context(|| format!("cannot move extracted {}", to.display()))?;
    }
    Ok(())
}
