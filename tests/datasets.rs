//! Readers against small files written in the real formats, plus the real Fashion-MNIST from
//! the Debian package `dataset-fashion-mnist` when installed.

use std::io::Write;
use std::path::{Path, PathBuf};

use byol::datasets::{self, Cifar, CifarKind, FolderOptions, IdxDataset, ImageFolder, Split, Stl10};
use byol::image::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen()).collect()
}

/// A CIFAR record: label bytes then R, G, B planes of `pixels[(y*32+x)*3+c]` (HWC input).
fn cifar_record(labels: &[u8], hwc: &[u8]) -> Vec<u8> {
    let mut rec = labels.to_vec();
    for c in 0..3 {
        rec.extend((0..1024).map(|p| hwc[p * 3 + c]));
    }
    rec
}

fn err_string<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

/// Writes a fake CIFAR-10 binary folder: `per_batch` records in each of the 5 train batches
/// and `test` records in the test batch. Returns the HWC images and labels of train and test.
type Split2 = (Vec<Vec<u8>>, Vec<u8>);
fn write_cifar10(dir: &Path, per_batch: usize, test: usize) -> (Split2, Split2) {
    std::fs::create_dir_all(dir).unwrap();
    let mut train = (Vec::new(), Vec::new());
    let mut seed = 0;
    let mut write = |name: &str, n: usize, out: &mut Split2| {
        let mut f = std::fs::File::create(dir.join(name)).unwrap();
        for _ in 0..n {
            seed += 1;
            let img = random_bytes(seed, 3072);
            let label = (seed % 10) as u8;
            f.write_all(&cifar_record(&[label], &img)).unwrap();
            out.0.push(img);
            out.1.push(label);
        }
    };
    for b in 1..=5 {
        write(&format!("data_batch_{b}.bin"), per_batch, &mut train);
    }
    let mut test_split = (Vec::new(), Vec::new());
    write("test_batch.bin", test, &mut test_split);
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    std::fs::write(dir.join("batches.meta.txt"), names).unwrap();
    (train, test_split)
}

#[test]
fn cifar10_returns_written_pixels_labels_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    // Written where the official tarball puts it; opened from the parent.
    let (train, test) = write_cifar10(&tmp.path().join("cifar-10-batches-bin"), 2, 3);
    let ds = datasets::open("cifar10", tmp.path(), Split::Train).unwrap();
    assert_eq!(ds.len(), 10);
    assert_eq!((ds.channels(), ds.num_classes()), (3, Some(10)));
    assert_eq!(ds.class_names()[1], "automobile");
    for i in 0..10 {
        let s = ds.get(i).unwrap();
        assert_eq!((s.image.width, s.image.height, s.image.channels), (32, 32, 3));
        assert_eq!(s.image.data, train.0[i], "pixels of train sample {i}");
        assert_eq!(s.label, Some(train.1[i] as usize));
    }
    let ds = datasets::open("CIFAR-10", &tmp.path().join("cifar-10-batches-bin"), Split::Test).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.get(2).unwrap().image.data, test.0[2]);
    assert!(ds.get(3).is_err());
    assert!(err_string(datasets::open("cifar10", tmp.path(), Split::Unlabeled)).contains("no unlabeled split"));
}

#[test]
fn cifar10_pixel_layout_is_planar_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = vec![3u8];
    rec.extend((0..3072).map(|i| (i / 1024) as u8 * 100 + (i % 1024 == 32 + 5) as u8));
    let path = tmp.path().join("test_batch.bin");
    std::fs::write(&path, &rec).unwrap();
    let ds = Cifar::from_files(CifarKind::Cifar10, &[path], None).unwrap();
    let s = ds.get(0).unwrap();
    assert_eq!(s.label, Some(3));
    // Row 1, column 5 carries +1 in every plane; planes are R=0, G=100, B=200.
    let px = |y: usize, x: usize| &s.image.data[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3];
    assert_eq!(px(1, 5), &[1, 101, 201]);
    assert_eq!(px(0, 0), &[0, 100, 200]);
    assert_eq!(px(5, 1), &[0, 100, 200]);
}

#[test]
fn cifar100_uses_fine_label_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    let img = random_bytes(7, 3072);
    let mut bytes = cifar_record(&[19, 87], &img);
    bytes.extend(cifar_record(&[0, 5], &img));
    std::fs::write(dir.join("test.bin"), &bytes).unwrap();
    let names: String = (0..100).map(|i| format!("class{i}\n")).collect();
    std::fs::write(dir.join("fine_label_names.txt"), names).unwrap();
    let ds = datasets::open("cifar100", tmp.path(), Split::Test).unwrap();
    assert_eq!((ds.len(), ds.num_classes()), (2, Some(100)));
    let s = ds.get(0).unwrap();
    assert_eq!(s.label, Some(87));
    assert_eq!(s.image.data, img);
    assert_eq!(ds.get(1).unwrap().label, Some(5));
    assert_eq!(ds.class_names()[87], "class87");
}

#[test]
fn cifar_corrupt_files_give_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path(), 2, 2);
    // Truncated batch.
    let path = tmp.path().join("data_batch_3.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let e = err_string(datasets::open("cifar10", tmp.path(), Split::Train));
    assert!(e.contains("data_batch_3.bin") && e.contains("wrong size"), "{e}");
    // Label out of range in the test batch.
    let path = tmp.path().join("test_batch.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3073] = 10;
    std::fs::write(&path, &bytes).unwrap();
    let e = err_string(datasets::open("cifar10", tmp.path(), Split::Test));
    assert!(e.contains("test_batch.bin") && e.contains("label 10 out of range"), "{e}");
    // Missing files.
    let e = err_string(datasets::open("cifar100", tmp.path(), Split::Train));
    assert!(e.contains("no CIFAR-100 files"), "{e}");
    // Wrong number of class names.
    std::fs::write(tmp.path().join("batches.meta.txt"), "a\nb\n").unwrap();
    std::fs::write(&path, &bytes[..3073]).unwrap();
    let e = err_string(datasets::open("cifar10", tmp.path(), Split::Test));
    assert!(e.contains("batches.meta.txt") && e.contains("expected 10 class names"), "{e}");
}

/// STL-10 image bytes for HWC pixels: channel planes, each column-major.
fn stl_record(hwc: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(27648);
    for c in 0..3 {
        for x in 0..96 {
            for y in 0..96 {
                rec.push(hwc[(y * 96 + x) * 3 + c]);
            }
        }
    }
    rec
}

fn write_stl(dir: &Path, stem: &str, images: &[Vec<u8>], labels: Option<&[u8]>) {
    std::fs::create_dir_all(dir).unwrap();
    let bytes: Vec<u8> = images.iter().flat_map(|i| stl_record(i)).collect();
    std::fs::write(dir.join(format!("{stem}_X.bin")), bytes).unwrap();
    if let Some(l) = labels {
        std::fs::write(dir.join(format!("{stem}_y.bin")), l).unwrap();
    }
}

#[test]
fn stl10_transposes_columns_and_shifts_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stl10_binary");
    let train: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(100 + i, 27648)).collect();
    let unlabeled: Vec<Vec<u8>> = (0..2).map(|i| random_bytes(200 + i, 27648)).collect();
    write_stl(&dir, "train", &train, Some(&[1, 10, 4]));
    write_stl(&dir, "unlabeled", &unlabeled, None);

    // A hand-placed pixel: row 2, column 7, green, must come out at HWC (2, 7, 1).
    let mut rec = vec![0u8; 27648];
    rec[9216 + 7 * 96 + 2] = 255;
    std::fs::write(dir.join("test_X.bin"), &rec).unwrap();
    std::fs::write(dir.join("test_y.bin"), [2u8]).unwrap();
    let test = datasets::open("stl10", tmp.path(), Split::Test).unwrap();
    let img = test.get(0).unwrap().image;
    assert_eq!(img.data[(2 * 96 + 7) * 3 + 1], 255);
    assert_eq!(img.data.iter().filter(|&&v| v != 0).count(), 1);
    assert_eq!(test.get(0).unwrap().label, Some(1));

    let ds = Stl10::open(tmp.path(), Split::Train).unwrap();
    assert_eq!(ds.len(), 3);
    let labels: Vec<_> = (0..3).map(|i| ds.get(i).unwrap().label).collect();
    assert_eq!(labels, [Some(0), Some(9), Some(3)]);
    assert_eq!(ds.get(1).unwrap().image.data, train[1]);

    let ds = datasets::open("stl10", tmp.path(), Split::Unlabeled).unwrap();
    assert_eq!((ds.len(), ds.num_classes()), (2, None));
    assert_eq!(ds.get(1).unwrap().label, None);
    assert_eq!(ds.get(1).unwrap().image.data, unlabeled[1]);

    let ds = datasets::open("stl10", tmp.path(), "train+unlabeled".parse().unwrap()).unwrap();
    assert_eq!((ds.len(), ds.num_classes()), (5, Some(10)));
    assert_eq!(ds.get(2).unwrap().label, Some(3));
    assert_eq!(ds.get(3).unwrap().label, None);
    assert_eq!(ds.get(3).unwrap().image.data, unlabeled[0]);
}

#[test]
fn stl10_bad_labels_and_sizes_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs: Vec<Vec<u8>> = (0..2).map(|i| random_bytes(i, 27648)).collect();
    write_stl(tmp.path(), "train", &imgs, Some(&[1, 0]));
    let e = err_string(Stl10::open(tmp.path(), Split::Train));
    assert!(e.contains("train_y.bin") && e.contains("out of range 1..=10"), "{e}");
    std::fs::write(tmp.path().join("train_y.bin"), [1u8, 2, 3]).unwrap();
    let e = err_string(Stl10::open(tmp.path(), Split::Train));
    assert!(e.contains("train_y.bin") && e.contains("label count mismatch"), "{e}");
    std::fs::write(tmp.path().join("train_X.bin"), vec![0u8; 27648 + 5]).unwrap();
    let e = err_string(Stl10::open(tmp.path(), Split::Train));
    assert!(e.contains("train_X.bin") && e.contains("wrong size"), "{e}");
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_raw_and_gz_return_written_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let pixels = random_bytes(5, 3 * 28 * 28);
    let labels = [7u8, 0, 9];
    // Raw train files at the top level, gzipped test files in the mnist/ sub-folder.
    std::fs::write(tmp.path().join("train-images-idx3-ubyte"), idx_bytes(&[3, 28, 28], &pixels)).unwrap();
    std::fs::write(tmp.path().join("train-labels-idx1-ubyte"), idx_bytes(&[3], &labels)).unwrap();
    let sub = tmp.path().join("mnist");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("t10k-images-idx3-ubyte.gz"), gz(&idx_bytes(&[3, 28, 28], &pixels))).unwrap();
    std::fs::write(sub.join("t10k-labels-idx1-ubyte.gz"), gz(&idx_bytes(&[3], &labels))).unwrap();
    for split in [Split::Train, Split::Test] {
        let ds = datasets::open("mnist", tmp.path(), split).unwrap();
        assert_eq!((ds.len(), ds.channels(), ds.num_classes()), (3, 1, Some(10)));
        for i in 0..3 {
            let s = ds.get(i).unwrap();
            assert_eq!((s.image.width, s.image.height, s.image.channels), (28, 28, 1));
            assert_eq!(s.image.data, pixels[i * 784..(i + 1) * 784]);
            assert_eq!(s.label, Some(labels[i] as usize));
        }
    }
    let ds = datasets::open("fashion_mnist", tmp.path(), Split::Train).unwrap();
    assert_eq!(ds.class_names()[9], "Ankle boot");
}

#[test]
fn idx_corrupt_files_give_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let open = |i: &str, l: &str| IdxDataset::open(&p(i), &p(l), names.clone());
    std::fs::write(p("img"), idx_bytes(&[2, 4, 4], &[0; 32])).unwrap();
    std::fs::write(p("lab"), idx_bytes(&[2], &[1, 2])).unwrap();
    assert_eq!(open("img", "lab").unwrap().len(), 2);

    std::fs::write(p("bad_magic"), idx_bytes(&[2, 4], &[0; 8])).unwrap();
    let e = err_string(open("bad_magic", "lab"));
    assert!(e.contains("bad_magic") && e.contains("bad magic"), "{e}");
    std::fs::write(p("short"), idx_bytes(&[2, 4, 4], &[0; 31])).unwrap();
    let e = err_string(open("short", "lab"));
    assert!(e.contains("short") && e.contains("wrong size"), "{e}");
    std::fs::write(p("lab3"), idx_bytes(&[3], &[1, 2, 3])).unwrap();
    let e = err_string(open("img", "lab3"));
    assert!(e.contains("lab3") && e.contains("label count mismatch"), "{e}");
    std::fs::write(p("lab_big"), idx_bytes(&[2], &[1, 10])).unwrap();
    let e = err_string(open("img", "lab_big"));
    assert!(e.contains("lab_big") && e.contains("out of range"), "{e}");
    let full = gz(&idx_bytes(&[2, 4, 4], &[0; 32]));
    std::fs::write(p("trunc.gz"), &full[..full.len() / 2]).unwrap();
    let e = err_string(open("trunc.gz", "lab"));
    assert!(e.contains("trunc.gz") && e.contains("gzip"), "{e}");
}

fn save_png(path: &Path, img: image::DynamicImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

#[test]
fn image_folder_labels_by_subfolder_and_decodes_lazily() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rgb = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
    save_png(&root.join("train/dog/b.png"), rgb.clone().into());
    save_png(&root.join("train/dog/nested/c.png"), rgb.clone().into());
    save_png(&root.join("train/cat/a.png"), image::GrayImage::from_pixel(2, 2, image::Luma([9])).into());
    let ds = datasets::open_folder(root, Split::Train).unwrap();
    assert_eq!((ds.len(), ds.num_classes(), ds.channels()), (3, Some(2), 3));
    assert_eq!(ds.class_names(), ["cat", "dog"]);
    let names: Vec<_> = ds.paths().iter().map(|p| p.strip_prefix(root).unwrap().to_path_buf()).collect();
    assert_eq!(names, [PathBuf::from("train/cat/a.png"), "train/dog/b.png".into(), "train/dog/nested/c.png".into()]);
    let s = ds.get(1).unwrap();
    assert_eq!(s.label, Some(1));
    assert_eq!((s.image.width, s.image.height, s.image.channels), (3, 2, 3));
    assert_eq!(s.image.data, rgb.as_raw().as_slice());
    // Grayscale images are expanded to RGB when the folder mixes both.
    assert_eq!(ds.get(0).unwrap().image.data, vec![9u8; 12]);

    // An all-grayscale flat folder stays 1-channel and unlabelled.
    let flat = root.join("flat");
    for (i, v) in [3u8, 4].iter().enumerate() {
        save_png(&flat.join(format!("{i}.png")), image::GrayImage::from_pixel(4, 4, image::Luma([*v])).into());
    }
    let ds = datasets::open("folder", &flat, Split::Unlabeled).unwrap();
    assert_eq!((ds.len(), ds.num_classes(), ds.channels()), (2, None, 1));
    let s = ds.get(1).unwrap();
    assert_eq!((s.label, s.image.data), (None, vec![4u8; 16]));
    let forced = ImageFolder::open_with(&flat, &FolderOptions { channels: Some(3), labeled: None }).unwrap();
    assert_eq!(forced.get(0).unwrap().image.data, vec![3u8; 48]);
    assert!(err_string(datasets::open("folder", root, Split::Test)).contains("no test/ sub-folder"));
}

#[test]
fn image_folder_undecodable_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    save_png(&tmp.path().join("a/ok.png"), image::GrayImage::new(2, 2).into());
    std::fs::write(tmp.path().join("a/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let e = err_string(ImageFolder::open(tmp.path()));
    assert!(e.contains("broken.png") && e.contains("undecodable"), "{e}");
    // Without the header probe the error surfaces in `get`.
    let ds = ImageFolder::open_with(tmp.path(), &FolderOptions { channels: Some(3), labeled: None }).unwrap();
    assert!(ds.get(1).is_ok());
    let e = err_string(ds.get(0));
    assert!(e.contains("broken.png") && e.contains("undecodable"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(err_string(ImageFolder::open(empty.path())).contains("no JPEG/PNG images"));
}

#[test]
fn unknown_names_and_splits_list_the_valid_ones() {
    let e = err_string(datasets::open("imagenet", Path::new("."), Split::Train));
    for n in datasets::DATASET_NAMES {
        assert!(e.contains(n), "{e}");
    }
    let e = err_string("validation".parse::<Split>());
    assert!(e.contains("train+unlabeled"), "{e}");
}

#[test]
fn real_fashion_mnist_from_debian_package() {
    let Some(dir) = datasets::find_fashion_mnist() else {
        println!("SKIPPED: Fashion-MNIST not found (apt-get install dataset-fashion-mnist)");
        return;
    };
    println!("Fashion-MNIST found in {}", dir.display());
    for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
        let ds = datasets::open("fashion-mnist", &dir, split).unwrap();
        assert_eq!((ds.len(), ds.channels(), ds.num_classes()), (n, 1, Some(10)));
        for i in [0, n / 2, n - 1] {
            let s = ds.get(i).unwrap();
            assert_eq!((s.image.width, s.image.height, s.image.channels), (28, 28, 1));
            assert!(s.image.data.iter().any(|&v| v > 0), "sample {i} is blank");
        }
        // Fashion-MNIST is exactly balanced: n/10 images of each label 0..9.
        let idx = IdxDataset::open_mnist(&dir, split == Split::Train, true).unwrap();
        let mut counts = [0usize; 10];
        for &l in idx.labels() {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, [n / 10; 10]);
    }
}
