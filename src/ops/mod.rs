//! The math the models are made of, over f32 activations: weight matrices in any supported
//! GGUF type, normalisation, rotary embeddings, attention, activations.
//!
//! Each op shapes the work (heads, tokens, rows of a matrix), splits it over the thread pool and
//! runs the CPU kernels of `crate::kernels` on the parts; the kernels pick their build from the
//! detected CPU. A matrix product's choice of kernels is one function, [`matrix::plan`].

pub mod activation;
pub mod attention;
pub mod matrix;
pub mod norm;
pub mod rope;

pub use matrix::{Matrix, OpError};

pub use activation::silu_mul;

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Index of the largest value (the first on ties), as greedy decoding picks.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}
