//! `byol export`: weights of a run in safetensors with torchvision names, so that PyTorch loads
//! them unchanged — the encoder f (paper §3.3) as a plain ResNet state dict (no prefix; the
//! representation is torchvision's ResNet with `fc = Identity`), or the whole online/target
//! networks prefixed `online.`/`target.` (encoder, projector g, predictor q).
//! The header metadata records the format and the architecture (`--arch` spelling).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli_eval::{ExportArgs, ExportWhat};
use crate::encoder_load::{arch_string, load_model, LoadedModel};
use crate::params::{write_safetensors_with_metadata, HostTensors};

fn prefixed(out: &mut HostTensors, prefix: &str, t: &HostTensors) {
    for (k, v) in t {
        out.insert(format!("{prefix}{k}"), v.clone());
    }
}

/// The tensors `what` selects from a loaded model, with their export names.
pub fn export_tensors(m: &LoadedModel, what: ExportWhat) -> Result<HostTensors> {
    let src = m.source.display();
    let online = || m.online.as_ref().with_context(|| format!("{src} holds only an encoder, no online network"));
    let target = || m.target.as_ref().with_context(|| format!("{src} holds no target network"));
    let mut out = HostTensors::new();
    match what {
        ExportWhat::Encoder => out = m.encoder.clone(),
        ExportWhat::Online => prefixed(&mut out, "online.", online()?),
        ExportWhat::Target => prefixed(&mut out, "target.", target()?),
        ExportWhat::All => {
            prefixed(&mut out, "online.", online()?);
            prefixed(&mut out, "target.", target()?);
        }
    }
    Ok(out)
}

/// Writes the selected tensors of `m` to `output`; returns the number of tensors written.
pub fn export_model(m: &LoadedModel, what: ExportWhat, output: &Path) -> Result<usize> {
    // Check the encoder against its architecture before writing anything.
    let device = crate::backend::device(crate::backend::available().first().copied().unwrap_or("flex"))?;
    m.encoder_params(&device).context("the encoder does not match its architecture")?;
    let t = export_tensors(m, what)?;
    let what_s = format!("{what:?}").to_ascii_lowercase();
    let meta = HashMap::from([
        ("format".to_string(), "byol-export-1".to_string()),
        ("arch".to_string(), arch_string(&m.arch)),
        ("what".to_string(), what_s),
        ("source".to_string(), m.source.display().to_string()),
    ]);
    write_safetensors_with_metadata(output, &t, Some(meta))?;
    Ok(t.len())
}

/// Runs `byol export`.
pub fn run_export(a: &ExportArgs) -> Result<usize> {
    let full = a.what != ExportWhat::Encoder;
    let m = load_model(&a.checkpoint, a.arch.as_deref(), full)?;
    export_model(&m, a.what, &a.output)
}
