//! Q4_0x8 (this project's type): the Q4_0 blocks of 8 consecutive rows, interleaved block by
//! block, so that one sequential read of a matrix feeds 8 outputs at a time.
//!
//! A `rows x cols` matrix (`rows` a multiple of 8, `nb = cols / 32`) is stored as `rows / 8`
//! groups, each `nb` [`BlockQ4_0x8`] long; group block `b` of group `g` holds block `b` of
//! rows `8g..8g + 8`. Inside a group block, the 8 scales come first (row 0 first), then the
//! 8 x 16 nibble bytes in 4-byte units: byte `32c + 4r + i` (`c < 4`, `r < 8`, `i < 4`) is
//! byte `4c + i` of row `r`'s Q4_0 block, so its low nibble is element `4c + i` of the row
//! and its high nibble element `4c + i + 16`. A 32-byte load thus holds 4 consecutive
//! elements (and the 4 sixteen places further) of each of the 8 rows, one row per 32-bit
//! lane. Each group block is exactly the 8 portable blocks' bytes, rearranged (144 bytes).

use super::q4_0::BlockQ4_0;
use super::q8_0::BlockQ8_0;
use super::{f16_le, Block, QK};
use crate::types::GROUP_ROWS;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Block `b` of 8 rows of Q4_0 (see the module docs for the byte layout).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockQ4_0x8 {
    /// The scales of rows 0..8, f16 little-endian.
    pub d: [[u8; 2]; GROUP_ROWS],
    /// The nibbles: `qs[c][4r + i]` is byte `4c + i` of row `r` (module docs).
    pub qs: [[u8; 32]; 4],
}

const _: () = assert!(size_of::<BlockQ4_0x8>() == 8 * size_of::<BlockQ4_0>());
const _: () = assert!(align_of::<BlockQ4_0x8>() == 1);

impl Block for BlockQ4_0x8 {
    const TYPE: GgmlType = GgmlType::Q4_0x8;
}

impl BlockQ4_0x8 {
    /// Interleaves block `b` of 8 rows.
    pub fn from_rows(rows: &[BlockQ4_0; GROUP_ROWS]) -> Self {
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
    pub fn row(&self, r: usize) -> BlockQ4_0 {
        let mut qs = [0u8; QK / 2];
        for (unit, chunk) in qs.chunks_exact_mut(4).zip(&self.qs) {
            unit.copy_from_slice(&chunk[4 * r..4 * r + 4]);
        }
        BlockQ4_0 { d: self.d[r], qs }
    }

    /// The 8 portable blocks back.
    pub fn to_rows(&self) -> [BlockQ4_0; GROUP_ROWS] {
        std::array::from_fn(|r| self.row(r))
    }

    /// The nibble byte `j < 16` of row `r` (low nibble element `j`, high `j + 16`).
    fn byte(&self, r: usize, j: usize) -> u8 {
        self.qs[j / 4][4 * r + j % 4]
    }
}

/// `y[r] = sum_i x[r][i] * a[i]` for the 8 rows of one group (`x` is the group's `nb` blocks,
/// `a` the Q8_0 activations): per row exactly [`super::q4_0::vec_dot_q4_0_q8_0`] of the
/// deinterleaved row, same operations in the same order, so the results are bit-identical.
pub fn vec_dot_q4_0x8_q8_0(
    x: &[BlockQ4_0x8],
    a: &[BlockQ8_0],
) -> Result<[f32; GROUP_ROWS], KernelError> {
    super::check_len("activation blocks", x.len(), a.len())?;
    let mut sumf = [0.0f32; GROUP_ROWS];
    for (bx, by) in x.iter().zip(a) {
        let (ylo, yhi) = by.qs.split_at(QK / 2);
        for (r, acc) in sumf.iter_mut().enumerate() {
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for (j, (&y0, &y1)) in ylo.iter().zip(yhi).enumerate() {
                let q = bx.byte(r, j);
                sumi0 += (i32::from(q & 0x0F) - 8) * i32::from(y0);
                sumi1 += (i32::from(q >> 4) - 8) * i32::from(y1);
            }
            let sumi = sumi0 + sumi1;
            *acc += sumi as f32 * f16_le(bx.d[r]) * by.d();
        }
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q4_0::vec_dot_q4_0_q8_0;
    use crate::quant::tests_common::Lcg;

    fn random_block(rng: &mut Lcg) -> BlockQ4_0 {
        let mut b = BlockQ4_0 {
            d: half::f16::from_f32(rng.next_f32() - 0.5).to_le_bytes(),
            qs: [0; 16],
        };
        for q in &mut b.qs {
            *q = (rng.next_f32() * 256.0) as u8;
        }
        b
    }

    #[test]
    fn layout_by_hand() {
        // Row r's qs[j] = 16 r + j, d = r: unit c of row r lands at 32c + 4r.
        let rows: [BlockQ4_0; 8] = std::array::from_fn(|r| BlockQ4_0 {
            d: [r as u8, 0],
            qs: std::array::from_fn(|j| (16 * r + j) as u8),
        });
        let g = BlockQ4_0x8::from_rows(&rows);
        assert_eq!(g.d[3], [3, 0]);
        assert_eq!(&g.qs[0][..8], &[0, 1, 2, 3, 16, 17, 18, 19]);
        assert_eq!(&g.qs[1][28..], &[116, 117, 118, 119]);
        assert_eq!(g.as_bytes()[16 + 127], 127);
        assert_eq!(g.as_bytes().len(), 144);
        assert_eq!(g.to_rows(), rows);
    }

    #[test]
    fn dot_equals_the_portable_dot_bit_for_bit() {
        let mut rng = Lcg(5);
        for nb in [1usize, 3, 16] {
            let rows: Vec<Vec<BlockQ4_0>> = (0..8)
                .map(|_| (0..nb).map(|_| random_block(&mut rng)).collect())
                .collect();
            let group: Vec<BlockQ4_0x8> = (0..nb)
                .map(|b| BlockQ4_0x8::from_rows(&std::array::from_fn(|r| rows[r][b])))
                .collect();
            let x = rng.uniform_vec(nb * 32, 3.0);
            let mut a = vec![BlockQ8_0::default(); nb];
            <BlockQ8_0 as crate::quant::RowBlock>::quantize_row(&x, &mut a).unwrap();
            let got = vec_dot_q4_0x8_q8_0(&group, &a).unwrap();
            for r in 0..8 {
                let want = vec_dot_q4_0_q8_0(&rows[r], &a).unwrap();
                assert_eq!(got[r].to_bits(), want.to_bits(), "nb {nb} row {r}");
            }
        }
        assert!(vec_dot_q4_0x8_q8_0(&[], &[BlockQ8_0::default()]).is_err());
    }
}
