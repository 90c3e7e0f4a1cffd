//! Parity of the augmentation ops with torchvision.transforms.v2.functional (BYOL App. B):
//! every fixture of kind "augment" in the fixture folder, every op in its JSON `ops`.

#[path = "common/fixtures.rs"]
mod fixtures;

use anyhow::{bail, Context, Result};
use byol::augment::ops;
use byol::augment::resize::resized_crop;
use byol::augment::{ChwImage, CropBox, Interpolation};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn num(v: &Value, key: &str) -> Result<f64> {
    v.get(key).and_then(Value::as_f64).with_context(|| format!("op parameter {key:?} missing in {v}"))
}

fn floats(v: &Value, key: &str) -> Result<Vec<f32>> {
    let arr = v.get(key).and_then(Value::as_array).with_context(|| format!("op parameter {key:?} missing in {v}"))?;
    arr.iter().map(|x| x.as_f64().map(|x| x as f32).context("non-numeric entry")).collect()
}

/// Applies op `name` with parameters `p` to one image; returns (output tensor name, result).
fn apply(name: &str, p: &Value, img: &ChwImage) -> Result<Vec<(String, ChwImage)>> {
    let mut x = img.clone();
    match name {
        "brightness" => ops::adjust_brightness(&mut x, num(p, "factor")? as f32),
        "contrast" => ops::adjust_contrast(&mut x, num(p, "factor")? as f32),
        "saturation" => ops::adjust_saturation(&mut x, num(p, "factor")? as f32),
        "hue" => ops::adjust_hue(&mut x, num(p, "shift")? as f32),
        "grayscale" => {
            let w = floats(p, "weights")?;
            assert_eq!(w, ops::GRAY_WEIGHTS.to_vec(), "fixture grayscale weights differ from the implementation");
            ops::to_grayscale(&mut x)
        }
        "solarize" => ops::solarize(&mut x, num(p, "threshold")? as f32),
        "hflip" => ops::hflip(&mut x),
        "blur" => {
            if let Some(pad) = p.get("padding").and_then(Value::as_str) {
                assert_eq!(pad, "reflect", "only reflect padding is implemented");
            }
            ops::gaussian_blur(&mut x, num(p, "kernel")? as usize, num(p, "sigma")? as f32)?
        }
        "normalize" => ops::normalize(&mut x, &floats(p, "mean")?, &floats(p, "std")?)?,
        "resized_crop" => {
            let crop = CropBox {
                top: num(p, "top")? as usize,
                left: num(p, "left")? as usize,
                height: num(p, "height")? as usize,
                width: num(p, "width")? as usize,
            };
            let (oh, ow) = match p.get("size") {
                Some(Value::Array(a)) if a.len() == 2 => {
                    (a[0].as_u64().context("size")? as usize, a[1].as_u64().context("size")? as usize)
                }
                Some(v) => {
                    let s = v.as_u64().context("size")? as usize;
                    (s, s)
                }
                None => bail!("resized_crop without size"),
            };
            if let Some(a) = p.get("bicubic_a").and_then(Value::as_f64) {
                assert_eq!(a, -0.75);
            }
            return Ok(vec![
                ("resized_crop_bilinear".into(), resized_crop(img, crop, oh, ow, Interpolation::Bilinear)?),
                ("resized_crop_bicubic".into(), resized_crop(img, crop, oh, ow, Interpolation::Bicubic)?),
            ]);
        }
        other => bail!("unknown augment op {other:?} in a fixture"),
    }
    Ok(vec![(name.to_string(), x)])
}

#[test]
fn augment_ops_match_torchvision() -> Result<()> {
    let dir = fixtures::fixture_dir();
    let files = fixtures::fixtures_of_kind(&dir, "augment")?;
    assert!(!files.is_empty(), "no fixture of kind \"augment\" in {}", dir.display());
    for (json, path) in files {
        let tensors = fixtures::read_safetensors(&path)?;
        let (shape, input) = tensors.get("input").with_context(|| format!("{}: no input", path.display()))?;
        let [n, c, h, w] = shape[..] else { bail!("{}: input shape {shape:?} is not NCHW", path.display()) };
        let per = c * h * w;
        let ops_json = json["ops"].as_object().with_context(|| format!("{}: no ops object", path.display()))?;
        let mut checked = 0;
        for (name, params) in ops_json {
            let mut outputs: Vec<(String, Vec<f32>)> = Vec::new();
            for i in 0..n {
                let img = ChwImage::new(c, h, w, input[i * per..(i + 1) * per].to_vec())?;
                for (k, (key, out)) in apply(name, params, &img)?.into_iter().enumerate() {
                    if i == 0 {
                        outputs.push((key, Vec::new()));
                    }
                    outputs[k].1.extend_from_slice(&out.data);
                }
            }
            for (key, got) in outputs {
                let (eshape, expected) =
                    tensors.get(&key).with_context(|| format!("{}: no output tensor {key}", path.display()))?;
                assert_eq!(got.len(), expected.len(), "{}: {key} shape {eshape:?}", path.display());
                let err = fixtures::rel_err(&got, expected);
                println!("{}: {key:<24} rel err {err:.3e}", path.display());
                assert!(err <= TOL, "{}: {key} rel err {err:e} > {TOL:e}", path.display());
                checked += 1;
            }
        }
        // Every stored tensor except the input must have been compared.
        assert_eq!(checked, tensors.len() - 1, "{}: some output tensors were not checked", path.display());
    }
    Ok(())
}
