//! The CPU as a [`Backend`]: host vectors and the file's `Matrix` views, every op one call of
//! the `ops::` function the forward passes called before the seam (same threads, same
//! kernels).

use std::ops::Range;

use half::f16;

use super::{Backend, BackendError, Heads};
use crate::kernels::{KvRef, Visible};
use crate::ops::attention::attend_rows;
use crate::ops::matrix::matmul_stacked;
use crate::ops::norm::rms_norm_rows;
use crate::ops::rope::{rope_table, rope_with, RopeStyle, RopeTable};
use crate::ops::{add_assign, silu_mul, Matrix};
use crate::text::KvType;
use crate::threadpool::ThreadPool;

/// The CPU, its ops split over `pool`.
pub struct Cpu<'p> {
    pub(super) pool: &'p ThreadPool,
    /// A stacked product's rows before they are split among the group's outputs.
    stacked: Vec<f32>,
}

impl<'p> Cpu<'p> {
    /// The CPU backend on `pool`'s threads.
    pub fn new(pool: &'p ThreadPool) -> Cpu<'p> {
        Cpu {
            pool,
            stacked: Vec::new(),
        }
    }
}

/// Matrices sharing an input, and them stacked as one where the file has them back to back.
#[derive(Clone, Debug)]
pub struct CpuGroup<'w> {
    /// The matrices, in output order.
    pub parts: Vec<Matrix<'w>>,
    /// All of them as one matrix, when they lie back to back.
    pub stacked: Option<Matrix<'w>>,
}

enum Store {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Store {
    fn new(len: usize, ty: KvType) -> Store {
        match ty {
            KvType::F16 => Store::F16(vec![f16::ZERO; len]),
            KvType::F32 => Store::F32(vec![0.0; len]),
        }
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F16(d) => {
                for (o, x) in d[at..at + src.len()].iter_mut().zip(src) {
                    *o = f16::from_f32(*x);
                }
            }
            Store::F32(d) => d[at..at + src.len()].copy_from_slice(src),
        }
    }

    fn view(&self, end: usize) -> KvRef<'_> {
        match self {
            Store::F16(d) => KvRef::F16(bytemuck::cast_slice(&d[..end])),
            Store::F32(d) => KvRef::F32(&d[..end]),
        }
    }
}

/// One layer's keys and values in host memory, F16 or F32.
pub struct CpuKv {
    width: usize,
    k: Store,
    v: Store,
}

impl CpuKv {
    /// A store of `n_ctx` positions of `width` values.
    pub fn new(n_ctx: usize, width: usize, ty: KvType) -> CpuKv {
        CpuKv {
            width,
            k: Store::new(n_ctx * width, ty),
            v: Store::new(n_ctx * width, ty),
        }
    }

    /// Stores rows of keys and values starting at position `pos`.
    pub fn store(&mut self, pos: usize, k: &[f32], v: &[f32]) {
        self.k.write(pos * self.width, k);
        self.v.write(pos * self.width, v);
    }

    /// The first `n` positions' keys and values, in place.
    pub fn view(&self, n: usize) -> (KvRef<'_>, KvRef<'_>) {
        (self.k.view(n * self.width), self.v.view(n * self.width))
    }
}

impl<'p> Backend for Cpu<'p> {
    type Buf = Vec<f32>;
    type Weight<'w> = Matrix<'w>;
    type Group<'w> = CpuGroup<'w>;
    type Vector = Vec<f32>;
    type Kv = CpuKv;
    type Rope = Vec<RopeTable>;

    fn upload_matrix<'w>(&self, m: &Matrix<'w>) -> Result<Matrix<'w>, BackendError> {
        Ok(*m)
    }

    fn upload_group<'w>(
        &self,
        parts: &[Matrix<'w>],
        stacked: Option<Matrix<'w>>,
    ) -> Result<CpuGroup<'w>, BackendError> {
        Ok(CpuGroup {
            parts: parts.to_vec(),
            stacked,
        })
    }

    fn upload_vector(&self, v: &[f32]) -> Result<Vec<f32>, BackendError> {
        Ok(v.to_vec())
    }

    fn check_heads(&self, _heads: Heads) -> Result<(), BackendError> {
        Ok(())
    }

    fn new_kv(&self, n_ctx: usize, width: usize, ty: KvType) -> Result<CpuKv, BackendError> {
        Ok(CpuKv::new(n_ctx, width, ty))
    }

    fn upload(&mut self, x: Vec<f32>) -> Result<Vec<f32>, BackendError> {
        Ok(x)
    }

    fn alloc(&mut self, len: usize) -> Result<Vec<f32>, BackendError> {
        Ok(vec![0f32; len])
    }

    fn read(&mut self, x: Vec<f32>) -> Result<Vec<f32>, BackendError> {
        Ok(x)
    }

    fn rope_tables(
        &mut self,
        positions: &[usize],
        rot_dim: usize,
        theta: f32,
    ) -> Result<Vec<RopeTable>, BackendError> {
        Ok(positions
            .iter()
            .map(|&p| rope_table(rot_dim, p, theta))
            .collect())
    }

    fn copy(&mut self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<(), BackendError> {
        dst.copy_from_slice(src);
        Ok(())
    }

    fn rms_norm(&mut self, x: &mut Vec<f32>, w: &Vec<f32>, eps: f32) -> Result<(), BackendError> {
        rms_norm_rows(self.pool, x, w, eps);
        Ok(())
    }

    fn matmul(
        &mut self,
        w: &Matrix<'_>,
        x: &Vec<f32>,
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        w.matmul(x, n, out, self.pool);
        Ok(())
    }

    fn matmul_group(
        &mut self,
        g: &CpuGroup<'_>,
        x: &Vec<f32>,
        n: usize,
        outs: &mut [&mut Vec<f32>],
    ) -> Result<(), BackendError> {
        let ms: Vec<&Matrix> = g.parts.iter().collect();
        let mut outs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        matmul_stacked(
            g.stacked.as_ref(),
            &ms,
            x,
            n,
            &mut outs,
            self.pool,
            &mut self.stacked,
        );
        Ok(())
    }

    fn add_bias(&mut self, x: &mut Vec<f32>, b: &Vec<f32>) -> Result<(), BackendError> {
        for row in x.chunks_exact_mut(b.len()) {
            add_assign(row, b);
        }
        Ok(())
    }

    fn rope(
        &mut self,
        x: &mut Vec<f32>,
        r: &Vec<RopeTable>,
        head_dim: usize,
        style: RopeStyle,
    ) -> Result<(), BackendError> {
        let width = x.len() / r.len().max(1);
        for (row, table) in x.chunks_exact_mut(width).zip(r) {
            rope_with(row, head_dim, table, style);
        }
        Ok(())
    }

    fn attend(
        &mut self,
        kv: &mut CpuKv,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        rows: Range<usize>,
        past: usize,
        heads: Heads,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        let (qd, kd, n) = (heads.q_dim(), heads.kv_dim(), rows.len());
        let (kr, qr) = (
            rows.start * kd..rows.end * kd,
            rows.start * qd..rows.end * qd,
        );
        kv.store(past, &k[kr.clone()], &v[kr]);
        let (kc, vc) = kv.view(past + n);
        // Row t sees positions 0..=past+t.
        attend_rows(
            self.pool,
            &q[qr.clone()],
            kc,
            vc,
            n,
            past + n,
            Visible::Causal { first: past },
            heads.n_head,
            heads.n_head_kv,
            heads.head_dim,
            &mut out[qr],
        );
        Ok(())
    }

    fn silu_mul(&mut self, gate: &mut Vec<f32>, up: &Vec<f32>) -> Result<(), BackendError> {
        silu_mul(gate, up, self.pool);
        Ok(())
    }

    fn add(&mut self, x: &mut Vec<f32>, y: &Vec<f32>) -> Result<(), BackendError> {
        add_assign(x, y);
        Ok(())
    }

    fn logits(
        &mut self,
        x: &mut Vec<f32>,
        rows: Range<usize>,
        norm: &Vec<f32>,
        eps: f32,
        w: &Matrix<'_>,
    ) -> Result<Vec<f32>, BackendError> {
        let d = norm.len();
        let x = &mut x[rows.start * d..rows.end * d];
        rms_norm_rows(self.pool, x, norm, eps);
        let mut out = vec![0f32; rows.len() * w.rows];
        w.matmul(x, rows.len(), &mut out, self.pool);
        Ok(out)
    }
}
