//! A fused CPU forward pass over the same weights, for scoring at replan scale.
//!
//! burn's Flex backend runs each layer as separate tensor operations (matrix product, bias add,
//! ReLU), each allocating a fresh activation tensor; on this machine the allocations and page
//! faults cost more than the arithmetic (NOTES.md: huge pages alone doubled Flex's throughput).
//! This path calls the same matrix-product kernels Flex uses (the `gemm` crate), on tiles of
//! [`TILE`] rows whose activations stay in L1/L2 cache, adds the bias and applies ReLU in place,
//! and reuses its buffers across tiles. It computes the same function as
//! [`Network::forward`](crate::network::Network::forward) followed by a sigmoid; a test checks
//! that the two agree to within float rounding.

use crate::network::Architecture;
use crate::HEADS;

/// Rows per tile: the widest activation block (`TILE × 128` floats, 64 KiB) stays in a Zen 3
/// core's L2 next to the weights (~60 KiB). Measured: 128 beat 256 and 512 by 10-40% here.
pub const TILE: usize = 128;

/// Weights in row-major `[d_in, d_out]` layout, as burn stores them.
#[derive(Debug, Clone)]
pub(crate) struct Fused {
    arch: Architecture,
    params: Vec<Vec<f32>>,
}

thread_local! {
    /// Each thread's activation buffers, reused across calls so that scoring allocates nothing
    /// once warm (one row at a time included).
    pub(crate) static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Per-thread activation buffers.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    h0: Vec<f32>,
    h1: Vec<f32>,
    z: Vec<f32>,
}

impl Fused {
    /// `params` in [`Architecture::param_shapes`] order, already checked by the caller.
    pub fn new(arch: Architecture, params: Vec<Vec<f32>>) -> Self {
        Fused { arch, params }
    }

    /// Scores `out.len()` rows of `x` (row-major, `out.len() × input`).
    pub fn forward(&self, x: &[f32], out: &mut [[f32; HEADS]], scratch: &mut Scratch) {
        let [h0, h1] = self.arch.hidden;
        let input = self.arch.input;
        debug_assert_eq!(x.len(), out.len() * input);
        let tile = TILE.min(out.len());
        scratch.h0.resize(tile * h0, 0.0);
        scratch.h1.resize(tile * h1, 0.0);
        scratch.z.resize(tile * HEADS, 0.0);
        for (x, out) in x.chunks(TILE * input).zip(out.chunks_mut(TILE)) {
            let rows = out.len();
            let a0 = &mut scratch.h0[..rows * h0];
            matmul_bias(
                x,
                &self.params[0],
                &self.params[1],
                a0,
                rows,
                input,
                h0,
                true,
            );
            let a1 = &mut scratch.h1[..rows * h1];
            matmul_bias(a0, &self.params[2], &self.params[3], a1, rows, h0, h1, true);
            let z = &mut scratch.z[..rows * HEADS];
            matmul_bias(
                a1,
                &self.params[4],
                &self.params[5],
                z,
                rows,
                h1,
                HEADS,
                false,
            );
            for (o, z) in out.iter_mut().zip(z.chunks_exact(HEADS)) {
                for (o, z) in o.iter_mut().zip(z) {
                    *o = 1.0 / (1.0 + (-z).exp());
                }
            }
        }
    }
}

/// `dst = lhs · rhs + bias`, then ReLU if `relu`; `lhs` is `m × k`, `rhs` `k × n`, `dst`
/// `m × n`, all row-major and contiguous.
#[allow(clippy::too_many_arguments)]
fn matmul_bias(
    lhs: &[f32],
    rhs: &[f32],
    bias: &[f32],
    dst: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    relu: bool,
) {
    assert!(lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n && bias.len() >= n);
    // SAFETY: the assert above guarantees that every element the strides reach lies inside the
    // three slices (row-major: element (i, j) at i·cols + j), `dst` does not alias the inputs
    // (it is a `&mut`), and `read_dst = false` means `dst` is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for row in dst[..m * n].chunks_exact_mut(n) {
        for (v, b) in row.iter_mut().zip(bias) {
            let s = *v + b;
            *v = if relu { s.max(0.0) } else { s };
        }
    }
}
