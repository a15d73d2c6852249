//! Matrix products between a weight matrix (any [`GgmlType`], rows stored contiguously in the
//! ggml layout) and f32 activations. This is the narrow interface the model calls; the
//! implementation behind it (reference scalar now, SIMD and threads later) may change freely.

use crate::{GgmlType, KernelError};
use half::f16;

/// A borrowed weight matrix of `rows` x `cols` elements of type `ty`, row-major, each row a
/// whole number of blocks. `data` is typically a slice of a memory-mapped file (no alignment
/// is assumed).
#[derive(Debug, Clone, Copy)]
pub struct WeightMatrix<'a> {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Wraps `data` as a `rows x cols` matrix of `ty`, checking that the sizes agree.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        let row_bytes = row_bytes(ty, cols)?;
        let expected = row_bytes
            .checked_mul(rows)
            .ok_or(KernelError::SizeMismatch {
                what: "weight matrix bytes",
                expected: usize::MAX,
                got: data.len(),
            })?;
        if data.len() != expected {
            return Err(KernelError::SizeMismatch {
                what: "weight matrix bytes",
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Element type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (outputs of a product).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs of a product).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// The raw bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// Bytes of a row of `cols` elements of `ty`.
pub fn row_bytes(ty: GgmlType, cols: usize) -> Result<usize, KernelError> {
    let bs = ty.block_size();
    if cols % bs != 0 {
        return Err(KernelError::NotBlockMultiple {
            ty,
            len: cols,
            block: bs,
        });
    }
    Ok(cols / bs * ty.block_bytes())
}

/// `y[r] = sum_c w[r, c] * x[c]` for every row `r`.
///
/// `x.len() == w.cols()`, `y.len() == w.rows()`.
pub fn matvec(w: &WeightMatrix<'_>, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    matmul(w, x, 1, y)
}

/// `y[i, r] = sum_c w[r, c] * x[i, c]` for `n` activation rows: `x` is `n x cols`, `y` is
/// `n x rows`, both row-major.
pub fn matmul(w: &WeightMatrix<'_>, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), KernelError> {
    check_len("activations", n * w.cols, x.len())?;
    check_len("outputs", n * w.rows, y.len())?;
    match w.ty {
        GgmlType::F32 => {
            for (xi, yi) in x
                .chunks_exact(w.cols.max(1))
                .zip(y.chunks_exact_mut(w.rows.max(1)))
            {
                for (r, out) in yi.iter_mut().enumerate() {
                    let row = w.row(r);
                    *out = row
                        .chunks_exact(4)
                        .zip(xi)
                        .map(|(b, &xv)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * xv)
                        .sum();
                }
            }
            Ok(())
        }
        GgmlType::F16 => {
            for (xi, yi) in x
                .chunks_exact(w.cols.max(1))
                .zip(y.chunks_exact_mut(w.rows.max(1)))
            {
                for (r, out) in yi.iter_mut().enumerate() {
                    let row = w.row(r);
                    *out = row
                        .chunks_exact(2)
                        .zip(xi)
                        .map(|(b, &xv)| f16::from_le_bytes([b[0], b[1]]).to_f32() * xv)
                        .sum();
                }
            }
            Ok(())
        }
        other => Err(KernelError::Unsupported(other)),
    }
}

/// Dequantizes row `r` of `w` into `out` (`out.len() == w.cols()`); used for embedding lookups.
pub fn dequantize_row(w: &WeightMatrix<'_>, r: usize, out: &mut [f32]) -> Result<(), KernelError> {
    check_len("row output", w.cols, out.len())?;
    if r >= w.rows {
        return Err(KernelError::SizeMismatch {
            what: "row index",
            expected: w.rows,
            got: r,
        });
    }
    match w.ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(w.row(r).chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            Ok(())
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(w.row(r).chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
            Ok(())
        }
        other => Err(KernelError::Unsupported(other)),
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::SizeMismatch {
            what,
            expected,
            got,
        })
    }
}
