//! The math the models are made of, over f32 activations: weight matrices in any supported
//! GGUF type, normalisation, rotary embeddings, attention, activations.
//!
//! These are the straightforward reference versions; the SIMD/CUDA kernels are tested against
//! them and plug in behind the same signatures.

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
