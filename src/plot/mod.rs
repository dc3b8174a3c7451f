//! PNG figures drawn with `plotters`: training curves ([`curves`]), the per-finding ROC grid
//! ([`roc`]) and confusion matrix heatmaps ([`confusion`]). Text uses a font embedded in the
//! binary (Ubuntu Light, from `epaint_default_fonts`), so figures render the same on a server
//! with no fonts installed.

pub mod confusion;
pub mod curves;
pub mod roc;

pub use confusion::confusion_grid;
pub use curves::{training_curves, CurvePoint};
pub use roc::roc_grid;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Registers the embedded font as plotters' "sans-serif" family, once per process.
pub(crate) fn ensure_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        use plotters::style::{register_font, FontStyle};
        // A failure here only means text is missing from figures; plotting reports it then.
        let _ = register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
        let _ = register_font("sans-serif", FontStyle::Bold, epaint_default_fonts::UBUNTU_LIGHT);
    });
}

/// Draws into a temporary sibling of `path` with `draw`, then renames it into place, so a failed
/// or interrupted plot never leaves a broken PNG where a good one was.
pub(crate) fn write_png_atomic(
    path: &Path,
    draw: impl FnOnce(&Path) -> std::result::Result<(), Box<dyn std::error::Error>>,
) -> Result<()> {
    ensure_fonts();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
    if let Err(e) = draw(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::format(path, format!("cannot draw figure: {e}")));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
