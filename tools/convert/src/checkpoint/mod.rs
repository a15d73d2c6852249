//! Hugging Face checkpoint readers: safetensors and PyTorch `.bin`, single or sharded.
//!
//! [`Checkpoint::open`] finds the weights of a checkpoint directory in any of the layouts that
//! real checkpoints use, reads only the headers (safetensors JSON headers, zip directories and
//! pickles) and keeps, for every tensor, where its bytes are. [`Checkpoint::read_f32`] then
//! reads one tensor at a time with `seek` + `read_exact`, so converting a 12 GB checkpoint
//! never holds more than one tensor in memory. Nothing is memory-mapped and no pickle is ever
//! executed: `data.pkl` is interpreted by a small, bounded pickle machine that knows only what
//! `torch.save` writes for a state dict.
//!
//! Layouts, in order of preference (safetensors first, as Hugging Face does):
//!
//! 1. `model.safetensors`
//! 2. `model.safetensors.index.json` + the shards its `weight_map` names
//! 3. `model-0000i-of-0000N.safetensors` without an index (all N shards must be present)
//! 4. `pytorch_model.bin`
//! 5. `pytorch_model.bin.index.json` + the shards its `weight_map` names
//! 6. `pytorch_model-0000i-of-0000N.bin` without an index (all N shards must be present)

mod error;
mod index;
mod pickle;
mod safetensors_file;
mod torch_file;

use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use error::CheckpointError;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the upper half of a binary32).
    BF16,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The name safetensors uses (`"F32"`, `"F16"`, `"BF16"`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Name, element type and shape of one tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// The state-dict name, e.g. `transformer.encoder.layers.0.input_layernorm.weight`.
    pub name: String,
    /// The stored element type.
    pub dtype: DType,
    /// The shape, outermost dimension first (`[]` for a scalar).
    pub shape: Vec<usize>,
}

impl TensorMeta {
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Which file format the weights are stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// `*.safetensors`.
    Safetensors,
    /// PyTorch `torch.save` zip archives (`*.bin`).
    PyTorch,
}

/// Where the elements of one tensor are in a weight file.
///
/// Element `[i0, i1, ..]` of the tensor is storage element
/// `offset + i0 * strides[0] + i1 * strides[1] + ..`, and storage element `k` occupies bytes
/// `storage_start + k * dtype.size() ..` of the file. Validated when the file is opened: every
/// element index of the tensor is below `storage_numel`, and the storage lies inside the file.
#[derive(Clone, Debug)]
pub(crate) struct Placement {
    /// Byte offset in the file of storage element 0.
    pub storage_start: u64,
    /// Number of elements of the storage.
    pub storage_numel: u64,
    /// Storage element of tensor element `[0, 0, ..]`.
    pub offset: u64,
    /// Element strides, one per dimension.
    pub strides: Vec<usize>,
}

/// A tensor as a shard reader found it.
#[derive(Clone, Debug)]
pub(crate) struct FoundTensor {
    pub meta: TensorMeta,
    pub placement: Placement,
}

/// One tensor of an opened checkpoint.
#[derive(Debug)]
struct Entry {
    meta: TensorMeta,
    /// Index into [`Checkpoint::files`].
    file: usize,
    placement: Placement,
}

/// An opened checkpoint: the tensor directory of all its weight files.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    format: WeightFormat,
    files: Vec<PathBuf>,
    tensors: BTreeMap<String, Entry>,
}

/// Bytes read per `read_exact` when converting a contiguous tensor.
const READ_CHUNK: usize = 1 << 20;

impl Checkpoint {
    /// Finds and opens the weights of the checkpoint directory `dir` (see the module docs for
    /// the layouts, in order of preference). Reads only headers and pickles.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::DirNotFound(dir.to_path_buf()));
        }
        let (format, files, index) = index::find_weights(dir)?;
        let mut checkpoint = Checkpoint {
            dir: dir.to_path_buf(),
            format,
            files: Vec::with_capacity(files.len()),
            tensors: BTreeMap::new(),
        };
        // Shard file name -> names of the tensors it holds, to check the index against.
        let mut found_in: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for path in files {
            let found = match format {
                WeightFormat::Safetensors => safetensors_file::read_tensors(&path)?,
                WeightFormat::PyTorch => torch_file::read_tensors(&path)?,
            };
            let file = checkpoint.files.len();
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let names = found_in.entry(file_name).or_default();
            for t in found {
                names.push(t.meta.name.clone());
                match checkpoint.tensors.entry(t.meta.name.clone()) {
                    MapEntry::Occupied(e) => {
                        let first = checkpoint
                            .files
                            .get(e.get().file)
                            .cloned()
                            .unwrap_or_else(|| path.clone());
                        return Err(CheckpointError::DuplicateTensor {
                            tensor: t.meta.name,
                            first,
                            second: path,
                        });
                    }
                    MapEntry::Vacant(e) => {
                        e.insert(Entry {
                            meta: t.meta,
                            file,
                            placement: t.placement,
                        });
                    }
                }
            }
            checkpoint.files.push(path);
        }
        if let Some(index) = index {
            index.check_against(dir, &found_in)?;
        }
        Ok(checkpoint)
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The format of the weight files.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The weight files that were opened, in shard order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint holds no tensor at all.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// All tensors, sorted by name (byte-wise string order, so `layers.10` comes before
    /// `layers.2`), whatever the file order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorMeta> {
        self.tensors.values().map(|e| &e.meta)
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors.get(name).map(|e| &e.meta)
    }

    /// Reads tensor `name` as `f32` values in row-major order (contiguous, whatever the stored
    /// strides). F16 and BF16 are upcast exactly. Reads only this tensor's bytes.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, CheckpointError> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::UnknownTensor(name.to_owned()))?;
        let path = self
            .files
            .get(entry.file)
            .ok_or_else(|| CheckpointError::UnknownTensor(name.to_owned()))?;
        let mut file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
        read_tensor(&mut file, path, &entry.meta, &entry.placement)
    }
}

/// Whether `strides` are the row-major strides of `shape` (dimensions of size 1 may have any
/// stride, as in PyTorch).
fn is_row_major(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&size, &stride) in shape.iter().zip(strides).rev() {
        if size != 1 && stride != expected {
            return false;
        }
        expected = expected.saturating_mul(size);
    }
    true
}

/// Storage index of the last element of a tensor, or `None` when the tensor is empty or the
/// index overflows `u64`.
pub(crate) fn last_element(shape: &[usize], strides: &[usize], offset: u64) -> Option<u64> {
    let mut last = offset;
    for (&size, &stride) in shape.iter().zip(strides) {
        let steps = u64::try_from(size.checked_sub(1)?).ok()?;
        last = last.checked_add(steps.checked_mul(u64::try_from(stride).ok()?)?)?;
    }
    Some(last)
}

/// Appends the values of `bytes` (whole elements of `dtype`, little-endian) to `out`.
fn decode_into(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        DType::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        ),
        DType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        ),
    }
}

/// Reads one tensor from `file` (see [`Placement`]).
fn read_tensor(
    file: &mut File,
    path: &Path,
    meta: &TensorMeta,
    placement: &Placement,
) -> Result<Vec<f32>, CheckpointError> {
    let io = |e| CheckpointError::io(path, e);
    let elem = meta.dtype.size();
    let numel = meta.numel();
    let mut out = Vec::with_capacity(numel);
    let Some(last) = last_element(&meta.shape, &placement.strides, placement.offset) else {
        return Ok(out); // empty tensor
    };
    if last >= placement.storage_numel {
        return Err(CheckpointError::bad_tensor(
            path,
            &meta.name,
            "view past its storage",
        ));
    }
    let overflow = || CheckpointError::bad_tensor(path, &meta.name, "byte offset overflows");
    let byte_at = |index: u64| {
        index
            .checked_mul(elem as u64)
            .and_then(|b| b.checked_add(placement.storage_start))
            .ok_or_else(overflow)
    };
    // The span of storage elements the tensor touches, first..=last.
    let first = placement.offset;
    let span = usize::try_from(last - first + 1).map_err(|_| overflow())?;
    file.seek(SeekFrom::Start(byte_at(first)?)).map_err(io)?;
    if is_row_major(&meta.shape, &placement.strides) {
        // Contiguous: stream it through a fixed buffer.
        let mut buf = vec![0u8; READ_CHUNK.min(numel.saturating_mul(elem))];
        let mut left = numel.checked_mul(elem).ok_or_else(overflow)?;
        while left > 0 {
            let n = left.min(buf.len());
            let chunk = buf.get_mut(..n).ok_or_else(overflow)?;
            file.read_exact(chunk).map_err(io)?;
            decode_into(meta.dtype, chunk, &mut out);
            left -= n;
        }
    } else {
        // Strided view: read the span once, then gather in row-major order.
        let mut bytes = vec![0u8; span.checked_mul(elem).ok_or_else(overflow)?];
        file.read_exact(&mut bytes).map_err(io)?;
        let mut storage = Vec::with_capacity(span);
        decode_into(meta.dtype, &bytes, &mut storage);
        drop(bytes);
        let mut index = vec![0usize; meta.shape.len()];
        for _ in 0..numel {
            let k: usize = index
                .iter()
                .zip(&placement.strides)
                .map(|(&i, &s)| i * s)
                .sum();
            let value = storage
                .get(k)
                .copied()
                .ok_or_else(|| CheckpointError::bad_tensor(path, &meta.name, "stride overrun"))?;
            out.push(value);
            // Next row-major multi-index.
            for (i, &size) in index.iter_mut().zip(&meta.shape).rev() {
                *i += 1;
                if *i < size {
                    break;
                }
                *i = 0;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_detection() {
        assert!(is_row_major(&[3, 4], &[4, 1]));
        assert!(is_row_major(&[1, 4], &[99, 1]));
        assert!(is_row_major(&[], &[]));
        assert!(!is_row_major(&[3, 4], &[1, 3]));
        assert!(!is_row_major(&[4], &[2]));
    }

    #[test]
    fn last_element_of_views() {
        assert_eq!(last_element(&[3, 4], &[4, 1], 0), Some(11));
        assert_eq!(last_element(&[3, 4], &[1, 3], 2), Some(2 + 2 + 9));
        assert_eq!(last_element(&[0, 4], &[4, 1], 0), None);
        assert_eq!(last_element(&[], &[], 5), Some(5));
        assert_eq!(last_element(&[usize::MAX, 2], &[usize::MAX, 1], 0), None);
    }
}
