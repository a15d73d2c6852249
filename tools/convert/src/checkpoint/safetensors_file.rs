//! Reading the header of a `.safetensors` file.
//!
//! Layout (safetensors format spec): an 8-byte little-endian header length `n`, `n` bytes of
//! JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`, then
//! the data; `data_offsets` are relative to the first byte after the header.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::{CheckpointError, DType, FoundTensor, Placement, TensorMeta};

/// Largest header accepted (the same bound as the `safetensors` crate).
const MAX_HEADER_BYTES: u64 = 100 << 20;

#[derive(Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Reads the header of the safetensors file `path` and checks every tensor's byte range
/// against its dtype, shape and the file length. Reads no tensor data.
pub(crate) fn read_tensors(path: &Path) -> Result<Vec<FoundTensor>, CheckpointError> {
    let bad = |reason: String| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let io = |e| CheckpointError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| bad(format!("file too short ({file_len} bytes) for a header")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {header_len} exceeds {MAX_HEADER_BYTES}"
        )));
    }
    if header_len > file_len.saturating_sub(8) {
        return Err(bad(format!(
            "header length {header_len} runs past the end of the file ({file_len} bytes): \
             truncated?"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let data_start = 8 + header_len;
    let data_len = file_len.saturating_sub(data_start);

    let json: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let mut found = Vec::with_capacity(json.len());
    for (name, value) in json {
        if name == "__metadata__" {
            continue;
        }
        let bad_tensor = |reason: String| CheckpointError::bad_tensor(path, &name, reason);
        let info: RawInfo = serde_json::from_value(value).map_err(|e| bad_tensor(e.to_string()))?;
        let dtype = match info.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            _ => {
                return Err(CheckpointError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    tensor: name,
                    dtype: info.dtype,
                })
            }
        };
        let [begin, end] = info.data_offsets;
        if begin > end {
            return Err(bad_tensor(format!(
                "data_offsets [{begin}, {end}] are reversed"
            )));
        }
        if end > data_len {
            return Err(bad_tensor(format!(
                "data ends at byte {} but the file has {file_len} bytes: truncated?",
                data_start.saturating_add(end)
            )));
        }
        let bytes = info
            .shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad_tensor(format!("shape {:?} overflows", info.shape)))?;
        if bytes != end - begin {
            return Err(bad_tensor(format!(
                "shape {:?} of {dtype} needs {bytes} bytes but data_offsets [{begin}, {end}] \
                 hold {}",
                info.shape,
                end - begin
            )));
        }
        let strides = row_major_strides(&info.shape);
        found.push(FoundTensor {
            placement: Placement {
                storage_start: data_start + begin,
                storage_numel: bytes / dtype.size() as u64,
                offset: 0,
                strides,
            },
            meta: TensorMeta {
                name,
                dtype,
                shape: info.shape,
            },
        });
    }
    Ok(found)
}

/// Row-major element strides of `shape` (saturating: only used once the size is known to fit).
pub(crate) fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    let mut acc = 1usize;
    for (stride, &size) in strides.iter_mut().zip(shape).rev() {
        *stride = acc;
        acc = acc.saturating_mul(size);
    }
    strides
}
