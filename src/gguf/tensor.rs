//! Tensor descriptors and the shape checks shared by the reader and the writer.

use super::{GgufError, MAX_DIMS};
use chatglm_kernels::GgmlType;

/// A tensor as described in a GGUF file's tensor-info section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_qkv.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous row length, `dims[1]` the number
    /// of rows of a matrix (the reverse of PyTorch's shape). 1 to 4 entries.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the first byte relative to the start of the data section; a multiple of the
    /// file's alignment.
    pub offset: u64,
    /// Size of the data in bytes (without padding).
    pub size_bytes: u64,
}

impl TensorInfo {
    /// Total number of elements (the product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Elements per row: `dims[0]`.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of `dims[1..]` (1 for a vector).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }
}

/// A tensor declared to the writer: name, dimensions (ggml order) and type. The writer
/// computes offsets and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    /// The tensor's name; at most [`MAX_WRITTEN_TENSOR_NAME_LEN`](super::MAX_WRITTEN_TENSOR_NAME_LEN) bytes.
    pub name: String,
    /// Dimensions in ggml order (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
}

impl TensorDesc {
    /// A descriptor.
    pub fn new(name: impl Into<String>, dims: &[u64], ty: GgmlType) -> Self {
        Self {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
        }
    }

    /// Size of the tensor's data in bytes, checking the shape as the reader does.
    pub fn size_bytes(&self) -> Result<u64, GgufError> {
        data_size(&self.name, &self.dims, self.ty)
    }
}

/// Checks a tensor's shape and returns the size of its data in bytes.
///
/// The dimension count is 1 to [`MAX_DIMS`]; every dimension and the element count fit in
/// `i64` (ggml's `int64_t ne[4]`); the row length is a whole number of blocks of `ty`; the
/// byte size fits in `u64`.
pub(crate) fn data_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims: u32::try_from(dims.len()).unwrap_or(u32::MAX),
        });
    }
    let overflow = || GgufError::ElementCountOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let limit = i64::MAX.unsigned_abs();
    let mut n_elements = 1u64;
    for &d in dims {
        if d > limit {
            return Err(overflow());
        }
        n_elements = n_elements
            .checked_mul(d)
            .filter(|&n| n <= limit)
            .ok_or_else(overflow)?;
    }
    let block = ty.block_size() as u64;
    let row_len = dims.first().copied().unwrap_or(0);
    if row_len % block != 0 {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name.to_owned(),
            ty,
            row_len,
            block,
        });
    }
    ty.bytes_for(n_elements).ok_or_else(overflow)
}
