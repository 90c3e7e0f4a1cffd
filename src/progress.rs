//! Progress display of the evaluation commands: an indicatif bar when stderr is a terminal,
//! nothing otherwise (logs stay clean in batch jobs).

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Result;
use burn::tensor::Device;

use crate::augment::AugmentConfig;
use crate::extract::{extract, Features};
use crate::image::Dataset;
use crate::params::ParamSet;
use crate::resnet::ResNetConfig;

/// A bar of `total` steps labelled `what`, or `None` when stderr is not a terminal.
pub fn bar(total: u64, what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}] {{msg}}"
    )) {
        bar.set_style(style);
    }
    Some(bar)
}

/// [`extract`] (evaluation mode, no prefix) with a progress bar named `what`.
pub fn extract_with_bar(
    cfg: &ResNetConfig,
    ps: &ParamSet,
    dataset: Arc<dyn Dataset>,
    augment: &AugmentConfig,
    batch_size: usize,
    device: &Device,
    what: &str,
) -> Result<Features> {
    let mut pb: Option<indicatif::ProgressBar> = None;
    let out = extract(cfg, ps, "", dataset, augment, batch_size, device, |done, total| {
        if done == 1 && pb.is_none() {
            pb = bar(total as u64, what);
        }
        if let Some(b) = &pb {
            b.set_position(done as u64);
        }
    });
    if let Some(b) = pb {
        b.finish_and_clear();
    }
    out
}
