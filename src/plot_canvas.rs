//! Drawing canvas for the evaluation and training-curve figures: plotters' bitmap backend with
//! an embedded font (DejaVu Sans from the `dejavu` crate, registered through plotters'
//! `ab_glyph` feature, so no system fonts or fontconfig are needed) and PNG output through the
//! `image` crate.

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Font family name under which the embedded font is registered.
pub const FONT: &str = "sans-serif";

/// Registers the embedded font with plotters (once per process).
pub fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ok.then_some(()).ok_or_else(|| anyhow!("the embedded DejaVu Sans font could not be parsed"))
}

/// Draws a `width × height` RGB picture with `draw` and saves it as a PNG at `path`.
pub fn render_png<F>(path: &Path, width: u32, height: u32, draw: F) -> Result<()>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
{
    ensure_font()?;
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot {}: {e}", path.display()))?;
        draw(&root).with_context(|| format!("drawing {}", path.display()))?;
        root.present().map_err(|e| anyhow!("plot {}: {e}", path.display()))?;
    }
    image::save_buffer_with_format(path, &buf, width, height, image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
        .with_context(|| format!("writing PNG {}", path.display()))
}

/// Converts a plotters drawing error into an `anyhow` error.
pub fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot drawing failed: {e:?}")
}
