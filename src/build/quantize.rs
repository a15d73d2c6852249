//! Quantizing a tensor's rows in parallel into its output bytes.

use chatglm_kernels::{quant, GgmlType, KernelError};

/// Encodes `values` (whole rows of `cols` elements) as `ty` into `out`, splitting the rows
/// between `threads` threads. The bytes do not depend on the thread count: every row is
/// quantized on its own.
pub fn encode_rows(
    ty: GgmlType,
    values: &[f32],
    cols: usize,
    out: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    let row_bytes = chatglm_kernels::matmul::row_bytes(ty, cols)?;
    let rows = values.len().checked_div(cols).unwrap_or(0);
    if rows * cols != values.len() || out.len() != rows * row_bytes {
        return Err(KernelError::SizeMismatch {
            what: "encoded tensor bytes",
            expected: rows * row_bytes,
            got: out.len(),
        });
    }
    if rows == 0 {
        return Ok(());
    }
    let threads = threads.clamp(1, rows);
    let rows_per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = values
            .chunks(rows_per * cols)
            .zip(out.chunks_mut(rows_per * row_bytes))
            .enumerate()
            .map(|(chunk, (src, dst))| {
                s.spawn(move || {
                    for (r, (x, y)) in src.chunks(cols).zip(dst.chunks_mut(row_bytes)).enumerate() {
                        quant::quantize_row(ty, x, y).map_err(|e| match e {
                            KernelError::NonFinite { index, value } => KernelError::NonFinite {
                                index: (chunk * rows_per + r) * cols + index,
                                value,
                            },
                            other => other,
                        })?;
                    }
                    Ok::<(), KernelError>(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}
