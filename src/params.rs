//! Named parameter sets with torchvision names, and their safetensors round trip.
//!
//! Every network in byol (ResNet trunk, projector, predictor) keeps its tensors in a
//! [`ParamSet`]: an ordered list of named tensors with a [`Kind`] that says how the optimizer
//! and the EMA treat them. Names follow torchvision (`conv1.weight`, `layer1.0.bn1.running_mean`,
//! `layer2.0.downsample.0.weight`, `net.0.weight`), so a set saved to safetensors loads into
//! PyTorch unchanged and PyTorch weights load here unchanged. Tensors are stored flat
//! (`Tensor<1>`) with their shape beside them; layers reshape on use.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use burn::tensor::{Device, Tensor, TensorData};

/// Host tensors by name: shape and values.
pub type HostTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// How a tensor is treated by training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Convolution or linear weight: weight decay and LARS trust ratio apply.
    Weight,
    /// Linear bias: trained, excluded from weight decay and trust ratio (paper App. J).
    Bias,
    /// BatchNorm γ: trained, excluded from weight decay and trust ratio.
    BnWeight,
    /// BatchNorm β: trained, excluded from weight decay and trust ratio.
    BnBias,
    /// BatchNorm running statistics: not trained, not averaged by the EMA.
    Buffer,
}

impl Kind {
    /// True for tensors the optimizer updates.
    pub fn trainable(self) -> bool {
        self != Kind::Buffer
    }
    /// True for tensors that LARS excludes from weight decay and trust-ratio scaling.
    pub fn lars_excluded(self) -> bool {
        matches!(self, Kind::Bias | Kind::BnWeight | Kind::BnBias)
    }
}

/// One named tensor.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: Kind,
    pub value: Tensor<1>,
}

impl Param {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An ordered set of named tensors (one network or several under prefixes).
#[derive(Clone, Debug, Default)]
pub struct ParamSet {
    params: Vec<Param>,
    index: HashMap<String, usize>,
}

impl ParamSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor given as host values. Panics on a duplicate name (a programming error).
    pub fn push(&mut self, name: String, shape: Vec<usize>, kind: Kind, values: Vec<f32>, device: &Device) {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}: shape/values mismatch");
        assert!(!self.index.contains_key(&name), "duplicate parameter {name}");
        let value = Tensor::<1>::from_data(TensorData::new(values, [shape.iter().product::<usize>()]), device);
        self.index.insert(name.clone(), self.params.len());
        self.params.push(Param { name, shape, kind, value });
    }

    /// Appends every tensor of `other` with `prefix` prepended to its name.
    pub fn extend_prefixed(&mut self, prefix: &str, other: ParamSet) {
        for mut p in other.params {
            p.name = format!("{prefix}{}", p.name);
            assert!(!self.index.contains_key(&p.name), "duplicate parameter {}", p.name);
            self.index.insert(p.name.clone(), self.params.len());
            self.params.push(p);
        }
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        self.params.iter_mut()
    }
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The parameter called `name`. Panics if absent: layer code only asks for names it created.
    pub fn param(&self, name: &str) -> &Param {
        match self.index.get(name) {
            Some(&i) => &self.params[i],
            None => panic!("no parameter named {name}"),
        }
    }
    pub fn param_mut(&mut self, name: &str) -> &mut Param {
        match self.index.get(name) {
            Some(&i) => &mut self.params[i],
            None => panic!("no parameter named {name}"),
        }
    }
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.index.get(name).map(|&i| &self.params[i])
    }

    /// The tensor `name` with its rank-D shape.
    pub fn tensor<const D: usize>(&self, name: &str) -> Tensor<D> {
        let p = self.param(name);
        let shape: [usize; D] = p.shape.clone().try_into().unwrap_or_else(|_| panic!("{name} is not rank {D}"));
        p.value.clone().reshape(shape)
    }

    /// Replaces the value of `name` (same number of elements).
    pub fn set(&mut self, name: &str, value: Tensor<1>) {
        self.param_mut(name).value = value;
    }

    /// Only the tensors whose names start with `prefix`, with the prefix removed.
    pub fn sub(&self, prefix: &str) -> ParamSet {
        let mut out = ParamSet::new();
        for p in &self.params {
            if let Some(rest) = p.name.strip_prefix(prefix) {
                let mut q = p.clone();
                q.name = rest.to_string();
                out.index.insert(q.name.clone(), out.params.len());
                out.params.push(q);
            }
        }
        out
    }

    /// Moves every tensor to `device` as a leaf. Trainable tensors on an autodiff device
    /// get `require_grad`; buffers never do.
    pub fn to_device(mut self, device: &Device) -> Self {
        for p in &mut self.params {
            let v = p.value.clone().inner().detach().to_device(&device.clone().inner());
            p.value = if device.is_autodiff() && p.kind.trainable() { v.autodiff().require_grad() } else { v };
        }
        self
    }

    /// A detached copy on the inner (non-autodiff) backend: the BYOL target is built this way,
    /// so its forward records no graph.
    pub fn detached(&self) -> Self {
        let mut out = self.clone();
        for p in &mut out.params {
            p.value = p.value.clone().inner();
        }
        out
    }

    /// Host copy of one tensor.
    pub fn values(&self, name: &str) -> Vec<f32> {
        to_vec(&self.param(name).value)
    }

    /// All tensors as host values keyed by name (used by checkpoints and export).
    pub fn to_host(&self) -> HostTensors {
        self.params.iter().map(|p| (p.name.clone(), (p.shape.clone(), to_vec(&p.value)))).collect()
    }

    /// Overwrites tensors from host values. Every name of this set must be present with the same
    /// shape; extra names in `values` are an error unless listed by `ignore` (a predicate).
    pub fn load_host(&mut self, values: &HostTensors, source: &str, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let mut missing = Vec::new();
        for p in &mut self.params {
            match values.get(&p.name) {
                None => missing.push(p.name.clone()),
                Some((shape, v)) => {
                    ensure!(
                        shape == &p.shape,
                        "{source}: tensor {} has shape {:?}, the model expects {:?}",
                        p.name,
                        shape,
                        p.shape
                    );
                    let device = p.value.device();
                    let t = Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), &device.clone().inner());
                    p.value = if device.is_autodiff() && p.kind.trainable() { t.autodiff().require_grad() } else { t };
                }
            }
        }
        if !missing.is_empty() {
            bail!(
                "{source}: missing {} tensors the model needs, e.g. {}",
                missing.len(),
                missing[..missing.len().min(5)].join(", ")
            );
        }
        let extra: Vec<&String> = values.keys().filter(|k| !self.contains(k) && !ignore(k)).collect();
        if !extra.is_empty() {
            bail!(
                "{source}: {} tensors do not belong to this model, e.g. {}",
                extra.len(),
                extra.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    }

    /// Saves every tensor (with `prefix` prepended to the names) to a safetensors file.
    pub fn save_safetensors(&self, path: &Path, prefix: &str) -> Result<()> {
        let map: HostTensors = self.to_host().into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect();
        write_safetensors(path, &map)
    }

    /// Loads every tensor of this set from a safetensors file where they are stored under
    /// `prefix`. Tensors outside the prefix are ignored, `num_batches_tracked` too.
    pub fn load_safetensors(&mut self, path: &Path, prefix: &str) -> Result<()> {
        let all = read_safetensors(path)?;
        let values: BTreeMap<_, _> =
            all.into_iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v))).collect();
        self.load_host(&values, &path.display().to_string(), |k| k.ends_with("num_batches_tracked"))
    }
}

/// Host copy of a tensor's values.
pub fn to_vec<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.try_to_vec_as::<f32>().unwrap_or_default()
}

/// Reads every floating tensor of a safetensors file (F32, F64, F16 and BF16 are converted to f32;
/// integer tensors such as `num_batches_tracked` are skipped).
pub fn read_safetensors(path: &Path) -> Result<HostTensors> {
    Ok(read_safetensors_with_metadata(path)?.0)
}

/// Reads the tensors and the header metadata of a safetensors file.
pub fn read_safetensors_with_metadata(path: &Path) -> Result<(HostTensors, std::collections::HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            safetensors::Dtype::F64 => {
                data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect()
            }
            safetensors::Dtype::BF16 => {
                data.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
            }
            safetensors::Dtype::F16 => {
                data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
            }
            _ => continue,
        };
        out.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok((out, meta))
}

/// Writes f32 tensors to a safetensors file, atomically (temporary file, then rename).
pub fn write_safetensors(path: &Path, tensors: &HostTensors) -> Result<()> {
    write_safetensors_with_metadata(path, tensors, None)
}

/// Like [`write_safetensors`], with string metadata in the header (`__metadata__`).
pub fn write_safetensors_with_metadata(
    path: &Path,
    tensors: &HostTensors,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, (shape, v))| (k.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), shape.clone()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, b, s)| Ok((k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let data = safetensors::serialize(views, &metadata)?;
    crate::fsutil::write_atomic(path, &data)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}
