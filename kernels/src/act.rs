//! Activations quantized once per product, in the form the integer kernels read.
//!
//! [`ActQ8_0`] holds `n` rows of Q8_0 blocks (ggml's bytes) and, per block, the scale widened
//! to f32 and the sum of the 32 values: the SIMD kernels multiply unsigned weight bytes
//! (nibbles, or int8 weights shifted by 128) by the signed activations and subtract
//! `offset * sum`, and they read the f32 scale instead of converting it once per row group.

use crate::quant::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK};
use crate::simd::Kernels;
use crate::types::QK_K;
use crate::KernelError;

/// `n` rows of activations quantized to Q8_0, with per-block f32 scales and sums.
#[derive(Debug, Clone, Default)]
pub struct ActQ8_0 {
    blocks: Vec<BlockQ8_0>,
    d: Vec<f32>,
    sum: Vec<i32>,
    /// Blocks per row.
    row_blocks: usize,
}

/// One row of an [`ActQ8_0`]: blocks, f32 scales and sums of equal length (an invariant the
/// kernels rely on; only [`ActQ8_0::row`] makes one).
#[derive(Debug, Clone, Copy)]
pub struct Q8Row<'a> {
    blocks: &'a [BlockQ8_0],
    d: &'a [f32],
    sum: &'a [i32],
}

impl ActQ8_0 {
    /// An empty buffer (it grows on first use and is then reused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes the `x.len() / cols` rows of `x` (row-major, `cols` a multiple of 32) with
    /// the quantizer of `k`. The bytes equal those of [`crate::quant::RowBlock::quantize_row`]
    /// for [`crate::quant::BlockQ8_0`]; so do
    /// the errors, with indices into `x`.
    pub fn quantize(&mut self, k: &Kernels, x: &[f32], cols: usize) -> Result<(), KernelError> {
        if !cols.is_multiple_of(QK) {
            return Err(KernelError::NotBlockMultiple {
                ty: crate::GgmlType::Q8_0,
                len: cols,
                block: QK,
            });
        }
        let nb = cols / QK;
        let rows = x.len().checked_div(cols).unwrap_or(0);
        crate::quant::check_len("activations", rows * cols, x.len())?;
        let total = rows * nb;
        self.blocks.resize(total, BlockQ8_0::default());
        self.d.resize(total, 0.0);
        self.sum.resize(total, 0);
        self.row_blocks = nb;
        if nb == 0 {
            return Ok(());
        }
        for (i, (((xi, b), d), s)) in x
            .chunks_exact(cols)
            .zip(self.blocks.chunks_exact_mut(nb))
            .zip(self.d.chunks_exact_mut(nb))
            .zip(self.sum.chunks_exact_mut(nb))
            .enumerate()
        {
            (k.quantize_q8_0)(xi, b, d, s).map_err(|e| e.offset_index(i * cols))?;
        }
        Ok(())
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.blocks.len().checked_div(self.row_blocks).unwrap_or(0)
    }

    /// Row `i`, if it exists.
    pub fn row(&self, i: usize) -> Option<Q8Row<'_>> {
        let nb = self.row_blocks;
        let range = i.checked_mul(nb)?..i.checked_add(1)?.checked_mul(nb)?;
        Some(Q8Row {
            blocks: self.blocks.get(range.clone())?,
            d: self.d.get(range.clone())?,
            sum: self.sum.get(range)?,
        })
    }
}

impl<'a> Q8Row<'a> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the row has no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The Q8_0 blocks.
    pub fn blocks(&self) -> &'a [BlockQ8_0] {
        self.blocks
    }

    /// The scales widened to f32 (same length as [`Q8Row::blocks`]).
    pub fn d(&self) -> &'a [f32] {
        self.d
    }

    /// The sum of the 32 values of each block (same length as [`Q8Row::blocks`]).
    pub fn sum(&self) -> &'a [i32] {
        self.sum
    }
}

/// `n` rows of activations quantized to Q8_1 (for Q4_1 weights).
#[derive(Debug, Clone, Default)]
pub struct ActQ8_1 {
    blocks: Vec<BlockQ8_1>,
    row_blocks: usize,
}

impl ActQ8_1 {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes the rows of `x` as [`ActQ8_0::quantize`] does, to Q8_1 (bytes and errors of
    /// [`crate::quant::RowBlock::quantize_row`] for [`crate::quant::BlockQ8_1`]).
    pub fn quantize(&mut self, k: &Kernels, x: &[f32], cols: usize) -> Result<(), KernelError> {
        if !cols.is_multiple_of(QK) {
            return Err(KernelError::NotBlockMultiple {
                ty: crate::GgmlType::Q8_1,
                len: cols,
                block: QK,
            });
        }
        let nb = cols / QK;
        let rows = x.len().checked_div(cols).unwrap_or(0);
        crate::quant::check_len("activations", rows * cols, x.len())?;
        self.blocks.resize(rows * nb, BlockQ8_1::default());
        self.row_blocks = nb;
        if nb == 0 {
            return Ok(());
        }
        for (i, (xi, b)) in x
            .chunks_exact(cols)
            .zip(self.blocks.chunks_exact_mut(nb))
            .enumerate()
        {
            (k.quantize_q8_1)(xi, b).map_err(|e| e.offset_index(i * cols))?;
        }
        Ok(())
    }

    /// Row `i`'s blocks, if it exists.
    pub fn row(&self, i: usize) -> Option<&[BlockQ8_1]> {
        let nb = self.row_blocks;
        self.blocks
            .get(i.checked_mul(nb)?..i.checked_add(1)?.checked_mul(nb)?)
    }
}

/// `n` rows of activations quantized to Q8_K (for the k-quants and IQ4_XS), with ggml's
/// reference quantizer (`quantize_row_q8_K_ref`) on every kernel path.
#[derive(Debug, Clone, Default)]
pub struct ActQ8K {
    blocks: Vec<BlockQ8K>,
    row_blocks: usize,
}

impl ActQ8K {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes the rows of `x` (`cols` a multiple of 256) as [`ActQ8_0::quantize`] does, to
    /// Q8_K; errors name indices into `x`.
    pub fn quantize(&mut self, x: &[f32], cols: usize) -> Result<(), KernelError> {
        if !cols.is_multiple_of(QK_K) {
            return Err(KernelError::NotBlockMultiple {
                ty: crate::GgmlType::Q8_K,
                len: cols,
                block: QK_K,
            });
        }
        let nb = cols / QK_K;
        let rows = x.len().checked_div(cols).unwrap_or(0);
        crate::quant::check_len("activations", rows * cols, x.len())?;
        self.blocks.resize(rows * nb, BlockQ8K::default());
        self.row_blocks = nb;
        if nb == 0 {
            return Ok(());
        }
        for (i, (xi, b)) in x
            .chunks_exact(cols)
            .zip(self.blocks.chunks_exact_mut(nb))
            .enumerate()
        {
            crate::quant::q8_k::quantize_row_q8_k(xi, b).map_err(|e| e.offset_index(i * cols))?;
        }
        Ok(())
    }

    /// Row `i`'s blocks, if it exists.
    pub fn row(&self, i: usize) -> Option<&[BlockQ8K]> {
        let nb = self.row_blocks;
        self.blocks
            .get(i.checked_mul(nb)?..i.checked_add(1)?.checked_mul(nb)?)
    }
}
