//! The compiled form of an op graph: fused affine color stages around
//! separable blur passes.

use super::{Op, REC709_LUMA};

/// The gain ([`Affine::gain`]) above which a color stage is applied to
/// the pixels a blur loads rather than to its sum: after the sum it
/// multiplies the sum's f32 rounding by the gain, which at 1000 put 16-bit
/// results 5 steps off; up to this gain the error stays a small fraction of
/// a 16-bit step, and once per output is the cheaper order.
pub const AT_LOAD_GAIN: f64 = 16.0;

/// `rgb' = m · rgb + offset`; alpha passes through. Composed in f64 so that
/// fusing many ops loses nothing measurable before the f32 kernels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// Row-major 3x3 matrix.
    pub m: [[f64; 3]; 3],
    /// Added after the matrix.
    pub offset: [f64; 3],
}

impl Affine {
    /// The identity.
    pub const IDENTITY: Affine = Affine { m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], offset: [0.0; 3] };

    /// The affine map of one color op, or `None` for a blur.
    pub fn of(op: &Op) -> Option<Affine> {
        let diag = |k: f64, o: f64| Affine { m: [[k, 0.0, 0.0], [0.0, k, 0.0], [0.0, 0.0, k]], offset: [o; 3] };
        Some(match *op {
            Op::Exposure { stops } => diag(stops.exp2(), 0.0),
            Op::Matrix { matrix, offset } => Affine {
                m: [
                    [matrix[0], matrix[1], matrix[2]],
                    [matrix[3], matrix[4], matrix[5]],
                    [matrix[6], matrix[7], matrix[8]],
                ],
                offset,
            },
            Op::Contrast { contrast, pivot } => diag(contrast, pivot * (1.0 - contrast)),
            Op::Saturation { saturation: s } => {
                let mut m = [[0.0; 3]; 3];
                for (i, row) in m.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = (1.0 - s) * REC709_LUMA[j] + if i == j { s } else { 0.0 };
                    }
                }
                Affine { m, offset: [0.0; 3] }
            }
            Op::Blur { .. } => return None,
        })
    }

    /// `next ∘ self`: apply `self`, then `next`.
    pub fn then(&self, next: &Affine) -> Affine {
        let mut out = Affine { m: [[0.0; 3]; 3], offset: next.offset };
        for i in 0..3 {
            for j in 0..3 {
                out.m[i][j] = (0..3).map(|k| next.m[i][k] * self.m[k][j]).sum();
            }
            out.offset[i] += (0..3).map(|k| next.m[i][k] * self.offset[k]).sum::<f64>();
        }
        out
    }

    /// How much the map can magnify an error in its input: the largest
    /// row sum of |coefficients| and |offset| (the offset counts because a
    /// blur's weights sum to one only to f32 precision).
    pub fn gain(&self) -> f64 {
        // A composition that overflowed (inf, or 0 · inf = NaN) magnifies
        // without bound; NaN would slip through `max`.
        if self.m.iter().flatten().chain(&self.offset).any(|v| !v.is_finite()) {
            return f64::INFINITY;
        }
        (0..3).map(|i| self.m[i].iter().map(|v| v.abs()).sum::<f64>() + self.offset[i].abs()).fold(0.0, f64::max)
    }

    /// Rows as `[m0, m1, m2, offset]` in f32, the layout the kernels use.
    pub fn rows_f32(&self) -> [[f32; 4]; 3] {
        let mut rows = [[0.0f32; 4]; 3];
        for (i, row) in rows.iter_mut().enumerate() {
            *row = [self.m[i][0] as f32, self.m[i][1] as f32, self.m[i][2] as f32, self.offset[i] as f32];
        }
        rows
    }
}

/// Normalised Gaussian weights for one blur.
#[derive(Clone, Debug, PartialEq)]
pub struct BlurKernel {
    /// Standard deviation in pixels (> 0).
    pub sigma: f64,
    /// ceil(3σ).
    pub radius: u32,
    /// `2 * radius + 1` weights, exp(-x²/2σ²) normalised over [-r, r].
    pub weights: Vec<f32>,
}

impl BlurKernel {
    /// The kernel for `sigma` (> 0).
    ///
    /// # Panics
    /// For a sigma past [`MAX_SIGMA`](super::MAX_SIGMA) or not finite,
    /// which [`OpGraph::new`](super::OpGraph::new) and every engine entry
    /// refuse: a panic with the reason, where `1e10` would otherwise ask
    /// for a 69 GB kernel and abort the process.
    pub fn new(sigma: f64) -> Self {
        assert!(
            sigma.is_finite() && sigma <= super::MAX_SIGMA,
            "blur sigma {sigma} is out of range (validate the graph first: OpGraph::validate)"
        );
        let radius = (3.0 * sigma).ceil() as u32;
        // The centre tap is 1 whatever sigma is: for a sigma so small that
        // 2σ² underflows to 0, 0/0 would make every weight NaN.
        let tap = |x: i64| if x == 0 { 1.0 } else { (-((x * x) as f64) / (2.0 * sigma * sigma)).exp() };
        let raw: Vec<f64> = (-(radius as i64)..=radius as i64).map(tap).collect();
        let sum: f64 = raw.iter().sum();
        BlurKernel { sigma, radius, weights: raw.iter().map(|w| (w / sum) as f32).collect() }
    }
}

/// A separable blur followed by a (possibly identity) color stage.
#[derive(Clone, Debug, PartialEq)]
pub struct BlurPass {
    /// The blur.
    pub kernel: BlurKernel,
    /// Color ops that followed it, fused.
    pub post: Affine,
}

/// What the kernels run: a color stage, then zero or more blur passes.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Color ops before the first blur, fused.
    pub pre: Affine,
    /// Blurs in order, each with the color ops after it.
    pub passes: Vec<BlurPass>,
}

impl Plan {
    /// Fuses consecutive color ops, drops sigma-0 blurs, and moves strong
    /// color stages ahead of the blurs (see below).
    pub fn compile(ops: &[Op]) -> Plan {
        let mut plan = Plan::fuse(ops);
        // A color stage commutes with a blur (its weights sum to one, its
        // edges clamp to pixels that exist): the same image either way in
        // exact math. So a strong one after a blur, whose gain would magnify
        // the sum's rounding, moves ahead of every blur with those before it,
        // where it is applied per loaded pixel; unless the runs composed
        // would pass the gain validation bounds each of them by. A strong
        // one before the blurs takes the later ones in too: the blurs then
        // sum what the whole grade makes, not values a later stage cancels
        // (a matrix that scales green by 1e5 and one that takes it back
        // would leave the sum's rounding at 1e5 times a 16-bit step). That
        // stage is applied per loaded pixel already: it costs nothing more.
        let hoisted = plan.passes.iter().fold(plan.pre, |pre, pass| pre.then(&pass.post));
        let strong =
            std::iter::once(&plan.pre).chain(plan.passes.iter().map(|p| &p.post)).any(|a| a.gain() > AT_LOAD_GAIN);
        if strong && hoisted.gain() <= super::MAX_FUSED_GAIN {
            plan.pre = hoisted;
            for pass in &mut plan.passes {
                pass.post = Affine::IDENTITY;
            }
        }
        plan
    }

    /// Fuses each run of consecutive color ops into one stage and drops
    /// sigma-0 blurs: the stages as written, which validation bounds.
    pub fn fuse(ops: &[Op]) -> Plan {
        let stages = Self::color_stages(ops);
        let sigmas = ops.iter().filter_map(|op| match op {
            Op::Blur { sigma } if *sigma > 0.0 => Some(*sigma),
            _ => None,
        });
        let passes = sigmas.zip(&stages[1..]).map(|(s, &post)| BlurPass { kernel: BlurKernel::new(s), post }).collect();
        Plan { pre: stages[0], passes }
    }

    /// The color stages [`Plan::fuse`] makes, before the first blur and
    /// after each, without the blurs' kernels: what validation bounds,
    /// once per prefix of a preset that fails it (a thousand blurs of
    /// σ 512 would otherwise build half a million kernels to name the op).
    pub(crate) fn color_stages(ops: &[Op]) -> Vec<Affine> {
        let mut stages = vec![Affine::IDENTITY];
        for op in ops {
            match (op, Affine::of(op)) {
                (_, Some(a)) => {
                    let last = stages.last_mut().expect("the stage before any blur");
                    *last = last.then(&a);
                }
                (Op::Blur { sigma }, None) if *sigma > 0.0 => stages.push(Affine::IDENTITY),
                _ => {}
            }
        }
        stages
    }

    /// Rows of context each side that the blurs need: the sum of radii,
    /// held below 2^28 (more rows than any frame has) so that sums of it
    /// stay in `u32` whatever a preset repeats.
    pub fn halo(&self) -> u32 {
        self.passes.iter().fold(0u32, |sum, p| sum.saturating_add(p.kernel.radius)).min(1 << 28)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_normalised_and_symmetric() {
        for sigma in [0.5, 1.0, 3.7, 16.0] {
            let k = BlurKernel::new(sigma);
            assert_eq!(k.weights.len(), 2 * k.radius as usize + 1);
            let sum: f32 = k.weights.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5);
            assert_eq!(k.weights[0], k.weights[k.weights.len() - 1]);
        }
        assert_eq!(BlurKernel::new(0.5).radius, 2);
        assert_eq!(BlurKernel::new(4.0).radius, 12);
        // A sigma whose 2σ² underflows is the identity, not NaN.
        assert_eq!(BlurKernel::new(1e-200).weights, [0.0, 1.0, 0.0]);
    }

    #[test]
    fn fusion_composes_in_order() {
        let ops = [Op::Exposure { stops: 1.0 }, Op::Contrast { contrast: 2.0, pivot: 0.5 }];
        let plan = Plan::compile(&ops);
        // x=0.25 → 0.5 → (0.5-0.5)*2+0.5 = 0.5
        let a = plan.pre;
        assert!((a.m[0][0] * 0.25 + a.offset[0] - 0.5).abs() < 1e-12);
        let plan =
            Plan::compile(&[Op::Blur { sigma: 0.0 }, Op::Blur { sigma: 2.0 }, Op::Saturation { saturation: 0.0 }]);
        assert_eq!(plan.passes.len(), 1);
        assert!((plan.passes[0].post.m[1][0] - REC709_LUMA[0]).abs() < 1e-12);
    }

    #[test]
    fn strong_stages_after_a_blur_move_ahead_of_every_blur() {
        let blur = |sigma| Op::Blur { sigma };
        let weak = [Op::Exposure { stops: 1.0 }, blur(2.0), Op::Saturation { saturation: 1.5 }, blur(1.0)];
        let plan = Plan::compile(&weak);
        assert_ne!(plan.passes[0].post, Affine::IDENTITY, "weak stages stay where they are");
        let strong = [weak.as_slice(), &[Op::Contrast { contrast: 1000.0, pivot: 0.5 }]].concat();
        let plan = Plan::compile(&strong);
        assert!(plan.passes.iter().all(|p| p.post == Affine::IDENTITY));
        assert_eq!(plan.passes.len(), 2);
        // exposure → saturation → contrast, in that order, on one color.
        let x = [0.2, 0.3, 0.4].map(|v: f64| v * 2.0);
        let luma: f64 = (0..3).map(|c| REC709_LUMA[c] * x[c]).sum();
        let want = (luma + 1.5 * (x[0] - luma) - 0.5) * 1000.0 + 0.5;
        let a = plan.pre;
        let got = a.m[0][0] * 0.2 + a.m[0][1] * 0.3 + a.m[0][2] * 0.4 + a.offset[0];
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        // A strong stage before the blur takes the later ones in with it.
        let undone = [
            Op::Matrix { matrix: [1.0, 1e5, 0.0, 0.0, 1e5, 0.0, 0.0, 0.0, 1.0], offset: [0.0; 3] },
            blur(2.0),
            Op::Matrix { matrix: [1.0, -1.0, 0.0, 0.0, 1e-5, 0.0, 0.0, 0.0, 1.0], offset: [0.0; 3] },
        ];
        let plan = Plan::compile(&undone);
        assert_eq!(plan.passes[0].post, Affine::IDENTITY);
        assert!(plan.pre.gain() < 1.0 + 1e-9, "the blur sums what the grade makes: {:?}", plan.pre);
        // Gains are bounded per run as written: strong runs kept apart by
        // blurs are valid, and not composed past the bound.
        let contrast = || Op::Contrast { contrast: 1000.0, pivot: 0.5 };
        let apart = [contrast(), blur(1.0), contrast(), blur(1.0), contrast(), blur(1.0), contrast()];
        assert!(crate::ops::OpGraph::new(apart.to_vec()).is_ok());
        let plan = Plan::compile(&apart);
        assert!(plan.pre.gain() <= crate::ops::MAX_FUSED_GAIN && plan.passes[2].post != Affine::IDENTITY);
    }
}
