//! NumPy `.npy` files (format version 1.0) holding a 2-D little-endian `float32` C-order array,
//! the interchange format of `byol embed` (representations y of §3.3, one row per sample), so
//! that `numpy.load` reads them directly.

use anyhow::{bail, ensure, Context, Result};
use std::io::{BufWriter, Write};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Writes `data` (row-major `rows × cols`) to `path` as a `<f4` array of shape `(rows, cols)`.
pub fn write_npy_f32(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    ensure!(
        data.len() == rows * cols,
        "npy {}: {} values do not form a {rows}x{cols} array",
        path.display(),
        data.len()
    );
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad with spaces so magic + version + length + header (+ '\n') is a multiple of 64 bytes.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let hlen = u16::try_from(header.len()).context("npy header too long")?;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    w.write_all(MAGIC)?;
    w.write_all(&[1, 0])?;
    w.write_all(&hlen.to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for v in data {
        w.write_all(&v.to_le_bytes())?;
    }
    w.flush().with_context(|| format!("writing {}", path.display()))
}

/// Reads a 2-D `<f4` C-order `.npy` file: `(data, rows, cols)`.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let p = path.display();
    ensure!(bytes.len() >= 10 && &bytes[..6] == MAGIC, "{p} is not a .npy file (bad magic)");
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "{p}: truncated .npy header");
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => bail!("{p}: unsupported .npy version {v}"),
    };
    ensure!(bytes.len() >= start + hlen, "{p}: truncated .npy header");
    let header =
        std::str::from_utf8(&bytes[start..start + hlen]).with_context(|| format!("{p}: .npy header is not text"))?;
    let descr = dict_value(header, "descr").with_context(|| format!("{p}: header has no 'descr'"))?;
    ensure!(descr.trim_matches(['\'', '"']) == "<f4", "{p}: dtype {descr} is not little-endian float32 ('<f4')");
    let fortran = dict_value(header, "fortran_order").with_context(|| format!("{p}: no 'fortran_order'"))?;
    ensure!(fortran == "False", "{p}: Fortran-order arrays are not supported");
    let shape = dict_value(header, "shape").with_context(|| format!("{p}: header has no 'shape'"))?;
    let dims: Vec<usize> = shape
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().with_context(|| format!("{p}: bad shape entry '{s}'")))
        .collect::<Result<_>>()?;
    ensure!(dims.len() == 2, "{p}: expected a 2-D array, shape is {shape}");
    let (rows, cols) = (dims[0], dims[1]);
    let body = &bytes[start + hlen..];
    ensure!(
        body.len() == rows * cols * 4,
        "{p}: {} data bytes for shape ({rows}, {cols}) of float32 (expected {})",
        body.len(),
        rows * cols * 4
    );
    let data = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((data, rows, cols))
}

/// The raw text of `'key': value` in a NumPy header dict (a tuple value keeps its parentheses).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_parsable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write_npy_f32(&path, &[1.5, -2.0, 3.25, f32::MIN_POSITIVE, 0.0, 7.0], 2, 3).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(bytes[10 + hlen - 1], b'\n');
        assert_eq!(bytes.len(), 10 + hlen + 24);
        let (d, r, c) = read_npy_f32(&path).unwrap();
        assert_eq!((r, c), (2, 3));
        assert_eq!(d, vec![1.5, -2.0, 3.25, f32::MIN_POSITIVE, 0.0, 7.0]);
        assert!(write_npy_f32(&path, &[1.0; 5], 2, 3).is_err());
    }
}
