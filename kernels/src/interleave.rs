//! Conversion between ggml's row-major matrices and this project's row-interleaved types
//! ([`GgmlType::Q4_0x8`], [`GgmlType::Q8_0x8`]; layout in [`crate::quant::q4_0x8`]).
//!
//! [`interleaved_layout`] is the one place that decides whether a matrix is stored
//! interleaved: the converter's plan asks it for the type it announces in the file's header,
//! and [`interleave`] asks it again for the bytes, so the two agree by construction. The
//! converter calls [`interleave`] on each weight matrix it writes; [`deinterleave`] is the
//! inverse (tests, tools). Both move whole blocks: no value changes.

use crate::matmul::WeightMatrix;
use crate::quant::{as_blocks, Block, BlockQ4_0, BlockQ4_0x8, BlockQ8_0, BlockQ8_0x8};
use crate::types::GROUP_ROWS;
use crate::{GgmlType, KernelError};

/// The type a `rows`-row matrix of `ty` (ggml's layout) is stored as when interleaving is
/// wanted: the row-interleaved form of `ty` when it has one and `rows` is a non-zero multiple
/// of 8, else `ty` itself.
pub fn interleaved_layout(ty: GgmlType, rows: usize) -> GgmlType {
    match ty.interleaved() {
        Some(t) if rows > 0 && rows.is_multiple_of(GROUP_ROWS) => t,
        _ => ty,
    }
}

/// Rearranges a `rows x cols` matrix of `ty` (ggml's layout) into its row-interleaved type:
/// `Q4_0` to `Q4_0x8`, `Q8_0` to `Q8_0x8`, as [`interleaved_layout`] decides. Any other
/// matrix (another type, or a row count that is not a multiple of 8) comes back unchanged,
/// with its own type. Errors if `data` is not `rows x cols` of `ty`.
pub fn interleave(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Result<(GgmlType, Vec<u8>), KernelError> {
    let w = WeightMatrix::new(ty, rows, cols, data)?;
    let target = interleaved_layout(ty, rows);
    if target == ty {
        return Ok((ty, data.to_vec()));
    }
    if cols == 0 {
        return Ok((target, Vec::new()));
    }
    let out = match ty {
        GgmlType::Q4_0 => groups_from_rows::<BlockQ4_0, BlockQ4_0x8>(&w, BlockQ4_0x8::from_rows)?,
        GgmlType::Q8_0 => groups_from_rows::<BlockQ8_0, BlockQ8_0x8>(&w, BlockQ8_0x8::from_rows)?,
        other => return Err(KernelError::Unsupported(other)),
    };
    Ok((target, out))
}

/// The inverse of [`interleave`]: a matrix of a row-interleaved type back in ggml's layout
/// and type; any other matrix comes back unchanged. Errors if `data` is not `rows x cols` of
/// `ty` (for an interleaved type, `rows` must be a multiple of 8).
pub fn deinterleave(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Result<(GgmlType, Vec<u8>), KernelError> {
    let w = WeightMatrix::new(ty, rows, cols, data)?;
    let out = match ty {
        GgmlType::Q4_0x8 => rows_from_groups::<BlockQ4_0x8, BlockQ4_0>(&w, BlockQ4_0x8::row)?,
        GgmlType::Q8_0x8 => rows_from_groups::<BlockQ8_0x8, BlockQ8_0>(&w, BlockQ8_0x8::row)?,
        _ => return Ok((ty, data.to_vec())),
    };
    Ok((ty.portable(), out))
}

/// Group block `b` of group `g` = `from_rows(block b of rows 8g..8g + 8)`.
fn groups_from_rows<P: Block, G: Block>(
    w: &WeightMatrix<'_>,
    from_rows: fn(&[P; GROUP_ROWS]) -> G,
) -> Result<Vec<u8>, KernelError> {
    let src: &[P] = as_blocks(w.data())?;
    let nb = w.cols() / crate::quant::QK;
    let mut out = Vec::with_capacity(w.data().len());
    for group in src.chunks_exact(nb * GROUP_ROWS) {
        for b in 0..nb {
            // `group` holds exactly 8 rows of `nb` blocks: in bounds.
            let rows: [P; GROUP_ROWS] = std::array::from_fn(|r| group[r * nb + b]);
            out.extend_from_slice(from_rows(&rows).as_bytes());
        }
    }
    Ok(out)
}

/// Row `8g + r`, block `b` = `row(group block b of group g, r)`.
fn rows_from_groups<G: Block, P: Block>(
    w: &WeightMatrix<'_>,
    row: fn(&G, usize) -> P,
) -> Result<Vec<u8>, KernelError> {
    let src: &[G] = as_blocks(w.data())?;
    let nb = w.cols() / crate::quant::QK;
    let mut out = Vec::with_capacity(w.data().len());
    if nb == 0 {
        return Ok(out);
    }
    for group in src.chunks_exact(nb) {
        for r in 0..GROUP_ROWS {
            for block in group {
                out.extend_from_slice(row(block, r).as_bytes());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::Lcg;
    use zerocopy::IntoBytes;

    fn random_bytes(n: usize, rng: &mut Lcg) -> Vec<u8> {
        (0..n).map(|_| (rng.next_f32() * 256.0) as u8).collect()
    }

    #[test]
    fn round_trips_and_keeps_other_matrices() {
        let mut rng = Lcg(17);
        for (ty, target) in [
            (GgmlType::Q4_0, GgmlType::Q4_0x8),
            (GgmlType::Q8_0, GgmlType::Q8_0x8),
        ] {
            for (rows, cols) in [(8, 32), (16, 96), (24, 4096), (8, 13696)] {
                let data = random_bytes(rows * cols / 32 * ty.block_bytes(), &mut rng);
                let (t, inter) = interleave(ty, rows, cols, &data).unwrap();
                assert_eq!(t, target);
                assert_eq!(inter.len(), data.len());
                assert_ne!(inter, data, "{ty} {rows}x{cols}: the bytes moved");
                let (back_ty, back) = deinterleave(t, rows, cols, &inter).unwrap();
                assert_eq!((back_ty, &back), (ty, &data));
            }
            // Rows not a multiple of 8, or none: unchanged.
            for rows in [0, 1, 7, 12] {
                let data = random_bytes(rows * 64 / 32 * ty.block_bytes(), &mut rng);
                assert_eq!(interleave(ty, rows, 64, &data).unwrap(), (ty, data.clone()));
            }
            // Wrong sizes.
            assert!(interleave(ty, 8, 64, &[0u8; 10]).is_err());
            assert!(deinterleave(target, 8, 64, &[0u8; 10]).is_err());
            assert!(matches!(
                deinterleave(target, 12, 32, &vec![0u8; 12 * ty.block_bytes()]),
                Err(KernelError::RowGroup { rows: 12, .. })
            ));
        }
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q4_1] {
            let data = random_bytes(8 * 32 / ty.block_size() * ty.block_bytes(), &mut rng);
            assert_eq!(interleave(ty, 8, 32, &data).unwrap(), (ty, data.clone()));
            assert_eq!(deinterleave(ty, 8, 32, &data).unwrap(), (ty, data.clone()));
        }
    }

    #[test]
    fn group_blocks_hold_the_rows_blocks() {
        // Row r, block b of a 16 x 64 Q4_0 matrix: scale bytes [r, b], nibbles 16r + b.
        let (rows, nb) = (16, 2);
        let mut data = Vec::new();
        for r in 0..rows {
            for b in 0..nb {
                data.extend_from_slice(
                    BlockQ4_0 {
                        d: [r as u8, b as u8],
                        qs: [(16 * r + b) as u8; 16],
                    }
                    .as_bytes(),
                );
            }
        }
        let (_, inter) = interleave(GgmlType::Q4_0, rows, 32 * nb, &data).unwrap();
        let groups: &[BlockQ4_0x8] = as_blocks(&inter).unwrap();
        assert_eq!(groups.len(), 4);
        // Group 1, block 0 holds rows 8..16, block 0.
        assert_eq!(groups[2].d[3], [11, 0]);
        assert_eq!(groups[2].qs[2][12], (16 * 11) as u8);
        assert_eq!(groups[3].d[7], [15, 1]);
    }
}
