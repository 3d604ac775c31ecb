//! Operations, the ordered op graph, presets, and their compiled form.
//!
//! An [`OpGraph`] is what the user asked for, op by op, in order. A
//! [`Plan`] is what the kernels run: every run of color ops between blurs is
//! affine in RGB, so it is composed (in f64) into one 3x4 matrix, and sigma-0
//! blurs disappear. Both backends run the same plan, so fusion is tested by
//! comparing either backend against the op-by-op definitions.

mod cpu;
mod plan;
mod preset;

pub use cpu::{process_cpu, process_cpu_banded};
pub use plan::{AT_LOAD_GAIN, Affine, BlurKernel, BlurPass, Plan};
pub use preset::{load_preset, parse_preset};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest accepted blur sigma, in pixels.
pub const MAX_SIGMA: f64 = 512.0;

/// The largest [`Affine::gain`] a fused run of colour ops may reach: far
/// beyond any grade, far below where f32 coefficients overflow.
pub const MAX_FUSED_GAIN: f64 = 1e12;

/// The largest product of the gains of a graph's runs of colour ops (kept
/// apart by blurs, which do not make values larger): values stay far
/// inside f32's range (3.4e38), where an overflow to inf would turn the
/// next mixed-sign stage into NaN pixels.
pub const MAX_TOTAL_GAIN: f64 = 1e30;

/// What a graph past [`MAX_TOTAL_GAIN`] is refused for.
const WHOLE_GAIN: &str = "color gain over the whole graph";

/// Rec.709 luma weights used by [`Op::Saturation`].
pub const REC709_LUMA: [f64; 3] = [0.2126, 0.7152, 0.0722];

/// One operation. Values are processed as stored, on 0..1 code values, and
/// are not clamped between operations (a float pipeline).
///
/// More ops are to come: matches on it outside this crate need a `_` arm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum Op {
    /// Multiply RGB by 2^stops.
    Exposure {
        /// Stops, -32 to 32.
        stops: f64,
    },
    /// `rgb' = M · rgb + offset`, M row-major.
    Matrix {
        /// Nine coefficients, row-major. By default, the identity (an
        /// offset alone, as `--offset` without `--matrix`).
        #[serde(default = "identity")]
        matrix: [f64; 9],
        /// Added after the matrix. By default, zero.
        #[serde(default)]
        offset: [f64; 3],
    },
    /// `x' = (x - pivot) · contrast + pivot` on RGB.
    Contrast {
        /// Slope around the pivot.
        contrast: f64,
        /// Value that stays put. By default, 0.5.
        #[serde(default = "default_pivot")]
        pivot: f64,
    },
    /// `x' = luma + saturation · (x - luma)` with Rec.709 luma weights.
    Saturation {
        /// 0 is greyscale, 1 is unchanged.
        saturation: f64,
    },
    /// Gaussian blur of all four channels; radius ceil(3σ), edges clamped.
    Blur {
        /// Standard deviation in pixels, 0 (identity) to 512.
        sigma: f64,
    },
}

fn default_pivot() -> f64 {
    0.5
}

impl Op {
    /// Short name as used in presets.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Exposure { .. } => "exposure",
            Op::Matrix { .. } => "matrix",
            Op::Contrast { .. } => "contrast",
            Op::Saturation { .. } => "saturation",
            Op::Blur { .. } => "blur",
        }
    }

    /// The preset key of the parameter [`Op::validate`] names `what` (the
    /// exposure is set as `stops`, a matrix coefficient in `matrix`).
    pub(crate) fn key_of<'a>(&self, what: &'a str) -> &'a str {
        match what {
            "exposure" => "stops",
            "matrix coefficient" => "matrix",
            other => other,
        }
    }

    /// Checks every parameter against its allowed range.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the parameter, the value and the range.
    pub fn validate(&self) -> Result<()> {
        fn finite(what: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(what, short(v), format!("{lo} ≤ {what} ≤ {hi}")))
            }
        }
        match self {
            Op::Exposure { stops } => finite("exposure", *stops, -32.0, 32.0),
            Op::Matrix { matrix, offset } => {
                for v in matrix {
                    finite("matrix coefficient", *v, -1e6, 1e6)?;
                }
                for v in offset {
                    finite("offset", *v, -1e6, 1e6)?;
                }
                Ok(())
            }
            Op::Contrast { contrast, pivot } => {
                finite("contrast", *contrast, -1000.0, 1000.0)?;
                finite("pivot", *pivot, -1000.0, 1000.0)
            }
            Op::Saturation { saturation } => finite("saturation", *saturation, -1000.0, 1000.0),
            Op::Blur { sigma } => finite("sigma", *sigma, 0.0, MAX_SIGMA),
        }
    }
}

/// The identity matrix, row-major.
fn identity() -> [f64; 9] {
    [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
}

/// An ordered list of operations, applied first to last. Deserialized
/// graphs (an editor's project file) are validated as [`OpGraph::new`]'s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct OpGraph {
    /// The operations.
    pub ops: Vec<Op>,
}

/// An [`OpGraph`] as read, before [`OpGraph::new`] checks it.
#[derive(Deserialize)]
struct Unchecked {
    ops: Vec<Op>,
}

impl TryFrom<Unchecked> for OpGraph {
    type Error = Error;

    fn try_from(graph: Unchecked) -> Result<Self> {
        OpGraph::new(graph.ops)
    }
}

impl OpGraph {
    /// A graph from ops, validated.
    ///
    /// # Errors
    /// The first op whose parameters are out of range.
    pub fn new(ops: Vec<Op>) -> Result<Self> {
        let graph = OpGraph { ops };
        graph.validate()?;
        Ok(graph)
    }

    /// Validates every op.
    ///
    /// # Errors
    /// The first op whose parameters are out of range.
    pub fn validate(&self) -> Result<()> {
        self.ops.iter().try_for_each(Op::validate)?;
        // Each op is bounded, but consecutive colour ops multiply: four
        // exposures of +32 stops fuse to 2^128, past f32 (the kernels'
        // precision), where 0 · inf makes NaN pixels.
        // The stages as written: moving strong ones ahead of the blurs
        // composes runs the user kept apart, whose gains may cancel.
        let mut total = 1.0f64;
        for stage in &Plan::color_stages(&self.ops) {
            let gain = stage.gain();
            if gain.is_nan() || gain > MAX_FUSED_GAIN {
                return Err(Error::invalid(
                    "fused color gain",
                    format!("{gain:.3e}"),
                    format!("at most {MAX_FUSED_GAIN:e} (consecutive color ops multiply)"),
                ));
            }
            // A run that gives nothing back (gain below 1 still carries
            // what came in) cannot shrink the bound.
            total *= gain.max(1.0);
        }
        if total > MAX_TOTAL_GAIN {
            return Err(Error::invalid(
                WHOLE_GAIN,
                format!("{total:.3e}"),
                format!("at most {MAX_TOTAL_GAIN:e} (runs of color ops between blurs multiply too)"),
            ));
        }
        Ok(())
    }

    /// True when the graph has no ops. (Ops that change nothing, such as
    /// a blur of sigma 0, still count: whether a graph is the identity is
    /// its [`plan`](Self::plan)'s to say.)
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// True when the graph changes no pixel (no ops, or ones that fuse to
    /// nothing, as exposure 0): a run of it puts nothing on the GPU.
    pub fn is_identity(&self) -> bool {
        crate::engine::is_identity(&self.plan())
    }

    /// Compiles to the fused form the kernels run.
    pub fn plan(&self) -> Plan {
        Plan::compile(&self.ops)
    }

    /// Whether the graph maps every grey pixel to a grey one: each color
    /// matrix adds the same to R, G and B (rows of equal sums and equal
    /// offsets; exposure, contrast, saturation and blur always do). A grey
    /// source is written grey only then: a tint of less than a step would
    /// otherwise be lost where the pixels round to grey.
    pub fn keeps_grey(&self) -> bool {
        self.ops.iter().all(|op| match op {
            Op::Matrix { matrix, offset } => {
                let sums = [0, 1, 2].map(|r| matrix[3 * r..3 * r + 3].iter().sum::<f64>());
                let same = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
                same(sums[0], sums[1]) && same(sums[1], sums[2]) && offset[0] == offset[1] && offset[1] == offset[2]
            }
            _ => true,
        })
    }

    /// `exposure +0.5 → blur 4` style summary for logs.
    pub fn describe(&self) -> String {
        if self.ops.is_empty() {
            return "no ops (copy)".into();
        }
        let parts: Vec<String> = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Exposure { stops } => {
                    let sign = if *stops >= 0.0 { "+" } else { "" };
                    format!("exposure {sign}{}", short(*stops))
                }
                // The values, as the flags take them: a matrix or an
                // offset named alone would hide what it does.
                Op::Matrix { matrix, offset } => {
                    let list = |v: &[f64]| v.iter().map(|v| short(*v)).collect::<Vec<_>>().join(",");
                    match (*matrix == identity(), offset.iter().any(|o| *o != 0.0)) {
                        (true, false) => "matrix identity".into(),
                        (true, true) => format!("offset {}", list(offset)),
                        (false, false) => format!("matrix {}", list(matrix)),
                        (false, true) => format!("matrix {} + offset {}", list(matrix), list(offset)),
                    }
                }
                Op::Contrast { contrast, pivot } => format!("contrast {} @ {}", short(*contrast), short(*pivot)),
                Op::Saturation { saturation } => format!("saturation {}", short(*saturation)),
                Op::Blur { sigma } => format!("blur {}", short(*sigma)),
            })
            .collect();
        parts.join(" → ")
    }
}

/// A value as logs and errors show it: `0` for either zero, plain digits
/// for the usual sizes, an exponent for the very small or large (`1e300`
/// as written, not as 301 digits).
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-6..1e9).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph read from a project file is held to the same ranges as one
    /// built in code: a wild sigma is an error, not a 69 GB kernel.
    #[test]
    fn deserialized_graphs_are_validated() {
        let good: OpGraph = serde_json::from_str(r#"{"ops":[{"type":"blur","sigma":4.0}]}"#).unwrap();
        assert_eq!(good.ops, [Op::Blur { sigma: 4.0 }]);
        let wild = serde_json::from_str::<OpGraph>(r#"{"ops":[{"type":"blur","sigma":1e10}]}"#).unwrap_err();
        assert!(wild.to_string().contains("sigma"), "{wild}");
        let back: OpGraph = serde_json::from_str(&serde_json::to_string(&good).unwrap()).unwrap();
        assert_eq!(back, good);
        let caught = std::panic::catch_unwind(|| BlurKernel::new(1e10)).unwrap_err();
        assert!(crate::error::panic_message(&*caught).contains("out of range"));
    }

    #[test]
    fn descriptions_show_values_short() {
        let g = OpGraph::new(vec![
            Op::Exposure { stops: -0.0 },
            Op::Exposure { stops: 0.5 },
            Op::Contrast { contrast: 1.2, pivot: -0.0 },
            Op::Saturation { saturation: -0.5 },
            Op::Blur { sigma: 1e-300 },
        ])
        .unwrap();
        assert_eq!(g.describe(), "exposure +0 → exposure +0.5 → contrast 1.2 @ 0 → saturation -0.5 → blur 1e-300");
        // A matrix and its offset are said with their values.
        let m = |matrix, offset| OpGraph::new(vec![Op::Matrix { matrix, offset }]).unwrap().describe();
        let tint = [1.1, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.9];
        assert_eq!(m(identity(), [0.0; 3]), "matrix identity");
        assert_eq!(m(identity(), [0.0, 0.1, 0.0]), "offset 0,0.1,0");
        assert_eq!(m(tint, [0.0; 3]), "matrix 1.1,0,0,0,1,0,0,0,0.9");
        assert_eq!(m(tint, [0.0, 0.1, 0.0]), "matrix 1.1,0,0,0,1,0,0,0,0.9 + offset 0,0.1,0");
    }

    #[test]
    fn grey_is_kept_by_matrices_that_add_alike_to_each_channel() {
        let m = |matrix, offset| OpGraph::new(vec![Op::Exposure { stops: 1.0 }, Op::Matrix { matrix, offset }]);
        let mixing = [0.2, 0.5, 0.3, 0.5, 0.3, 0.2, 0.3, 0.2, 0.5];
        assert!(m(mixing, [0.1; 3]).unwrap().keeps_grey(), "rows of one sum (1, to an ulp), one lift");
        assert!(!m(mixing, [1.0 / 255.0, 0.0, 0.0]).unwrap().keeps_grey(), "a tint of one step");
        let warm = [1.003, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert!(!m(warm, [0.0; 3]).unwrap().keeps_grey(), "a gain on red alone");
        assert!(OpGraph::new(vec![Op::Saturation { saturation: -3.0 }, Op::Blur { sigma: 2.0 }]).unwrap().keeps_grey());
    }
}
