//! Q8_0x8 (this project's type): the Q8_0 blocks of 8 consecutive rows, interleaved block by
//! block (see [`super::q4_0x8`] for the matrix layout, which is the same).
//!
//! Inside a group block the 8 scales come first (row 0 first), then the 8 x 32 values in
//! 4-byte units: byte `32c + 4r + i` (`c < 8`, `r < 8`, `i < 4`) is value `4c + i` of row `r`.
//! A 32-byte load holds 4 consecutive values of each of the 8 rows, one row per 32-bit lane
//! (272 bytes, the 8 portable blocks' bytes rearranged).

use super::q8_0::BlockQ8_0;
use super::{f16_le, Block, QK};
use crate::types::GROUP_ROWS;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Block `b` of 8 rows of Q8_0 (see the module docs for the byte layout).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockQ8_0x8 {
    /// The scales of rows 0..8, f16 little-endian.
    pub d: [[u8; 2]; GROUP_ROWS],
    /// The values: `qs[c][4r + i]` is value `4c + i` of row `r` (module docs).
    pub qs: [[i8; 32]; 8],
}

const _: () = assert!(size_of::<BlockQ8_0x8>() == 8 * size_of::<BlockQ8_0>());
const _: () = assert!(align_of::<BlockQ8_0x8>() == 1);

impl Block for BlockQ8_0x8 {
    const TYPE: GgmlType = GgmlType::Q8_0x8;
}

impl BlockQ8_0x8 {
    /// Interleaves block `b` of 8 rows.
    pub fn from_rows(rows: &[BlockQ8_0; GROUP_ROWS]) -> Self {
        let mut out = Self::new_zeroed();
        for (r, block) in rows.iter().enumerate() {
            out.d[r] = block.d;
            for (chunk, unit) in out.qs.iter_mut().zip(block.qs.chunks_exact(4)) {
                chunk[4 * r..4 * r + 4].copy_from_slice(unit);
            }
        }
        out
    }

    /// Row `r`'s portable block (`r < 8`).
    pub fn row(&self, r: usize) -> BlockQ8_0 {
        let mut qs = [0i8; QK];
        for (unit, chunk) in qs.chunks_exact_mut(4).zip(&self.qs) {
            unit.copy_from_slice(&chunk[4 * r..4 * r + 4]);
        }
        BlockQ8_0 { d: self.d[r], qs }
    }

    /// The 8 portable blocks back.
    pub fn to_rows(&self) -> [BlockQ8_0; GROUP_ROWS] {
        std::array::from_fn(|r| self.row(r))
    }
}

/// `y[r] = sum_i x[r][i] * a[i]` for the 8 rows of one group: per row exactly
/// [`super::q8_0::vec_dot_q8_0_q8_0`] of the deinterleaved row (bit-identical).
pub fn vec_dot_q8_0x8_q8_0(
    x: &[BlockQ8_0x8],
    a: &[BlockQ8_0],
) -> Result<[f32; GROUP_ROWS], KernelError> {
    super::check_len("activation blocks", x.len(), a.len())?;
    let mut sumf = [0.0f32; GROUP_ROWS];
    for (bx, by) in x.iter().zip(a) {
        for (r, acc) in sumf.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for (j, &y) in by.qs.iter().enumerate() {
                let q = bx.qs[j / 4][4 * r + j % 4];
                sumi += i32::from(q) * i32::from(y);
            }
            *acc += sumi as f32 * (f16_le(bx.d[r]) * by.d());
        }
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q8_0::vec_dot_q8_0_q8_0;
    use crate::quant::tests_common::Lcg;

    fn random_block(rng: &mut Lcg) -> BlockQ8_0 {
        BlockQ8_0 {
            d: half::f16::from_f32(rng.next_f32() - 0.5).to_le_bytes(),
            qs: std::array::from_fn(|_| (rng.next_f32() * 256.0 - 128.0) as i8),
        }
    }

    #[test]
    fn layout_by_hand() {
        let rows: [BlockQ8_0; 8] = std::array::from_fn(|r| BlockQ8_0 {
            d: [r as u8, 1],
            qs: std::array::from_fn(|j| (32 * r + j) as u8 as i8),
        });
        let g = BlockQ8_0x8::from_rows(&rows);
        assert_eq!(g.d[7], [7, 1]);
        assert_eq!(&g.qs[0][..8], &[0, 1, 2, 3, 32, 33, 34, 35]);
        // Unit 7 of row 7: values 28..32 of row 7 = 252..256 as bytes.
        assert_eq!(&g.qs[7][28..], &[-4, -3, -2, -1]);
        assert_eq!(g.as_bytes().len(), 272);
        assert_eq!(g.to_rows(), rows);
    }

    #[test]
    fn dot_equals_the_portable_dot_bit_for_bit() {
        let mut rng = Lcg(6);
        for nb in [1usize, 5, 16] {
            let rows: Vec<Vec<BlockQ8_0>> = (0..8)
                .map(|_| (0..nb).map(|_| random_block(&mut rng)).collect())
                .collect();
            let group: Vec<BlockQ8_0x8> = (0..nb)
                .map(|b| BlockQ8_0x8::from_rows(&std::array::from_fn(|r| rows[r][b])))
                .collect();
            let x = rng.uniform_vec(nb * 32, 3.0);
            let mut a = vec![BlockQ8_0::default(); nb];
            <BlockQ8_0 as crate::quant::RowBlock>::quantize_row(&x, &mut a).unwrap();
            let got = vec_dot_q8_0x8_q8_0(&group, &a).unwrap();
            for r in 0..8 {
                let want = vec_dot_q8_0_q8_0(&rows[r], &a).unwrap();
                assert_eq!(got[r].to_bits(), want.to_bits(), "nb {nb} row {r}");
            }
        }
    }
}
