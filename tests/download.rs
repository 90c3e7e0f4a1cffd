//! Downloader against a tiny HTTP server on 127.0.0.1 serving archives built by the test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use byol::datasets::{self, Split};
use byol::download::{download, md5_hex, DownloadOptions};
use flate2::{write::GzEncoder, Compression};

#[derive(Clone, Copy)]
enum Mode {
    Full,
    /// Announces the full length, sends half, closes the connection.
    CloseHalfway,
}

/// Serves `files` (name -> body) over HTTP/1.1 on 127.0.0.1; returns the base URL.
fn serve(files: HashMap<String, (Vec<u8>, Mode)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = respond(stream, &files);
        }
    });
    format!("http://{addr}/data/")
}

fn respond(mut stream: TcpStream, files: &HashMap<String, (Vec<u8>, Mode)>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    match path.strip_prefix("/data/").and_then(|p| files.get(p)) {
        Some((body, mode)) => {
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
            let n = match mode {
                Mode::Full => body.len(),
                Mode::CloseHalfway => body.len() / 2,
            };
            stream.write_all(&body[..n])?;
        }
        None => write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?,
    }
    stream.flush()
}

fn tar_gz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A fake `cifar-10-binary.tar.gz`: one record per train batch, two in the test batch; record
/// `k` has label `k % 10` and every pixel byte equal to `k`.
fn fake_cifar10() -> Vec<u8> {
    let record = |k: u8| {
        let mut r = vec![k % 10];
        r.extend(std::iter::repeat_n(k, 3072));
        r
    };
    let mut entries: Vec<(String, Vec<u8>)> =
        (1..=5).map(|b| (format!("cifar-10-batches-bin/data_batch_{b}.bin"), record(b as u8))).collect();
    entries.push(("cifar-10-batches-bin/test_batch.bin".into(), [record(11), record(12)].concat()));
    tar_gz(&entries)
}

fn opts(base_url: String, file: &str, md5: String) -> DownloadOptions {
    DownloadOptions {
        base_url: Some(base_url),
        checksums_override: HashMap::from([(file.to_string(), md5)]),
        progress: false,
        ..Default::default()
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

const CIFAR: &str = "cifar-10-binary.tar.gz";

#[test]
fn downloads_verifies_extracts_and_opens_cifar10() {
    let archive = fake_cifar10();
    let md5 = md5_hex(&archive);
    let base = serve(HashMap::from([(CIFAR.to_string(), (archive, Mode::Full))]));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar");
    let root = download("cifar10", &dir, &opts(base.clone(), CIFAR, md5.clone())).unwrap();
    // The archive is removed after extraction and no temporary file is left behind.
    assert_eq!(entries(&dir), ["cifar-10-batches-bin"]);
    let train = datasets::open("cifar10", &root, Split::Train).unwrap();
    assert_eq!(train.len(), 5);
    let s = train.get(3).unwrap();
    assert_eq!((s.label, s.image.data), (Some(4), vec![4u8; 3072]));
    let test = datasets::open("cifar10", &root, Split::Test).unwrap();
    assert_eq!(test.get(1).unwrap().label, Some(2));

    // Already present: nothing is fetched (this server has nothing to give).
    let empty = serve(HashMap::new());
    download("cifar10", &dir, &opts(empty.clone(), CIFAR, md5.clone())).unwrap();
    // Forced: the 404 surfaces, naming the URL, and the extracted data stays intact.
    let forced = DownloadOptions { force: true, ..opts(empty, CIFAR, md5.clone()) };
    let e = format!("{:#}", download("cifar10", &dir, &forced).unwrap_err());
    assert!(e.contains(CIFAR) && e.contains("404"), "{e}");
    assert_eq!(datasets::open("cifar10", &root, Split::Train).unwrap().len(), 5);

    // keep_archives keeps the verified archive next to the data.
    let keep = DownloadOptions { force: true, keep_archives: true, ..opts(base, CIFAR, md5) };
    download("cifar10", &dir, &keep).unwrap();
    assert_eq!(entries(&dir), ["cifar-10-batches-bin", CIFAR]);
}

#[test]
fn wrong_checksum_errors_and_leaves_no_file() {
    let archive = fake_cifar10();
    let actual = md5_hex(&archive);
    let base = serve(HashMap::from([(CIFAR.to_string(), (archive, Mode::Full))]));
    let tmp = tempfile::tempdir().unwrap();
    let expected = "0123456789abcdef0123456789abcdef".to_string();
    let e = format!("{:#}", download("cifar10", tmp.path(), &opts(base, CIFAR, expected.clone())).unwrap_err());
    assert!(e.contains(CIFAR) && e.contains(&expected) && e.contains(&actual), "{e}");
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
}

#[test]
fn connection_closed_midway_leaves_no_complete_looking_file() {
    let archive = fake_cifar10();
    let md5 = md5_hex(&archive);
    let base = serve(HashMap::from([(CIFAR.to_string(), (archive, Mode::CloseHalfway))]));
    let tmp = tempfile::tempdir().unwrap();
    let e = format!("{:#}", download("cifar10", tmp.path(), &opts(base, CIFAR, md5)).unwrap_err());
    println!("{e}");
    assert!(e.contains(CIFAR), "{e}");
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
    assert!(datasets::open("cifar10", tmp.path(), Split::Train).is_err());
}

#[test]
fn downloads_mnist_gz_files_into_subfolder() {
    let mut files = HashMap::new();
    let mut overrides = HashMap::new();
    for (stem, n) in [("train", 3u32), ("t10k", 2)] {
        let mut img = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            img.extend(d.to_be_bytes());
        }
        img.extend((0..n * 784).map(|i| (i % 251) as u8));
        let mut lab = vec![0, 0, 8, 1];
        lab.extend(n.to_be_bytes());
        lab.extend((0..n).map(|i| i as u8));
        for (kind, raw) in [("images-idx3", img), ("labels-idx1", lab)] {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(&raw).unwrap();
            let body = e.finish().unwrap();
            let name = format!("{stem}-{kind}-ubyte.gz");
            overrides.insert(name.clone(), md5_hex(&body));
            files.insert(name, (body, Mode::Full));
        }
    }
    let base = serve(files);
    let tmp = tempfile::tempdir().unwrap();
    let o =
        DownloadOptions { base_url: Some(base), checksums_override: overrides, progress: false, ..Default::default() };
    let root = download("mnist", tmp.path(), &o).unwrap();
    assert_eq!(entries(&tmp.path().join("mnist")).len(), 4);
    let ds = datasets::open("mnist", &root, Split::Train).unwrap();
    assert_eq!(ds.len(), 3);
    let s = ds.get(2).unwrap();
    assert_eq!(s.label, Some(2));
    assert_eq!(s.image.data[0], (2 * 784 % 251) as u8);
    assert_eq!(datasets::open("mnist", &root, Split::Test).unwrap().len(), 2);
}

#[test]
fn unknown_or_local_only_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let e = format!("{:#}", download("imagenet", tmp.path(), &DownloadOptions::default()).unwrap_err());
    assert!(e.contains("cifar10") && e.contains("fashion-mnist"), "{e}");
    let e = format!("{:#}", download("folder", tmp.path(), &DownloadOptions::default()).unwrap_err());
    assert!(e.contains("cannot be downloaded"), "{e}");
}
