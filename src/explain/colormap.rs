//! Colormaps for heatmaps: matplotlib's `jet` (what Grad-CAM papers and the notebooks show) and
//! `inferno` (perceptually uniform, readable in greyscale print and by colour-blind readers).

use serde::Serialize;

/// A map from [0, 1] to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Colormap {
    #[default]
    Jet,
    Inferno,
}

/// matplotlib's jet as its piecewise-linear segment data: (position, value) per channel.
const JET_R: [(f32, f32); 5] = [(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)];
const JET_G: [(f32, f32); 6] = [(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)];
const JET_B: [(f32, f32); 5] = [(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)];

/// matplotlib's inferno table (van der Walt & Smith) sampled at entries 0, 32, ..., 224, 255 of
/// its 256; interpolated linearly between them (within 1/255 of the full table).
const INFERNO: [[f32; 3]; 9] = [
    [0.001462, 0.000466, 0.013866],
    [0.087411, 0.044556, 0.224813],
    [0.341500, 0.062325, 0.429425],
    [0.578304, 0.148039, 0.404411],
    [0.735683, 0.215906, 0.330245],
    [0.865006, 0.316822, 0.226055],
    [0.978422, 0.557937, 0.034931],
    [0.989587, 0.782004, 0.104551],
    [0.988362, 0.998364, 0.644924],
];

fn piecewise(points: &[(f32, f32)], t: f32) -> f32 {
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if t <= x1 {
            return y0 + (y1 - y0) * (t - x0) / (x1 - x0);
        }
    }
    points[points.len() - 1].1
}

impl Colormap {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Jet => "jet",
            Colormap::Inferno => "inferno",
        }
    }

    /// Parses `jet` or `inferno`.
    pub fn parse(name: &str) -> crate::Result<Colormap> {
        match name {
            "jet" => Ok(Colormap::Jet),
            "inferno" => Ok(Colormap::Inferno),
            _ => Err(crate::Error::InvalidArgument {
                op: "colormap",
                detail: format!("unknown colormap '{name}' (known: jet, inferno)"),
            }),
        }
    }

    /// The colour of `t` (clamped to [0, 1]; NaN counts as 0), channels in [0, 1].
    pub fn rgb(self, t: f32) -> [f32; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        match self {
            Colormap::Jet => [piecewise(&JET_R, t), piecewise(&JET_G, t), piecewise(&JET_B, t)],
            Colormap::Inferno => {
                let pos = t * (INFERNO.len() - 1) as f32;
                let i = (pos.floor() as usize).min(INFERNO.len() - 2);
                let f = pos - i as f32;
                let (a, b) = (INFERNO[i], INFERNO[i + 1]);
                [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_from_dark_blue_through_green_to_dark_red() {
        assert_eq!(Colormap::Jet.rgb(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(Colormap::Jet.rgb(0.5)[1], 1.0);
        assert_eq!(Colormap::Jet.rgb(1.0), [0.5, 0.0, 0.0]);
    }

    #[test]
    fn inferno_is_monotone_in_lightness() {
        let lum = |c: [f32; 3]| 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
        let l: Vec<f32> = (0..=50).map(|i| lum(Colormap::Inferno.rgb(i as f32 / 50.0))).collect();
        assert!(l.windows(2).all(|w| w[1] > w[0]), "{l:?}");
    }
}
