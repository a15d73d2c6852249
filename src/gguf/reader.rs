//! The GGUF reader: parses a whole file held in memory (mapped or owned) and hands out
//! borrowed views of its tensors.
//!
//! Every count, length and offset is checked against the bytes that remain before it sizes a
//! loop, an allocation or a slice; see `docs/FORMAT.md` for the limits.

use super::cursor::{to_u64, Cursor};
use super::tensor::data_size;
use super::{
    align_up, Array, GgufError, Metadata, TensorInfo, Value, ValueType, ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_KEY_LEN, MAX_STRING_LEN,
    MAX_TENSOR_NAME_LEN,
};
use crate::mmap::Mmap;
use chatglm_kernels::GgmlType;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Fewest bytes a metadata entry can take: key length (8), value type (4), a 1-byte value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;
/// Fewest bytes a tensor info can take: name length (8), dimension count (4), type (4),
/// offset (8).
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 4 + 8;

/// Where the file's bytes live.
enum Storage {
    /// A read-only memory map of a file.
    Mmap(Mmap),
    /// An owned buffer.
    Vec(Vec<u8>),
}

/// Prints the kind and length only: a model is gigabytes.
impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Storage::Mmap(_) => "Mmap",
            Storage::Vec(_) => "Vec",
        };
        write!(f, "{kind}({} bytes)", self.bytes().len())
    }
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m.as_bytes(),
            Storage::Vec(v) => v,
        }
    }
}

/// A parsed GGUF file: its metadata, its tensor descriptors, and its bytes (memory-mapped or
/// owned), from which tensor data is borrowed without copying.
#[derive(Debug)]
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// What parsing yields besides the bytes themselves.
struct Parsed {
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// Generates a method of [`GgufFile`] that forwards to the same method of [`Metadata`].
macro_rules! forward_getter {
    ($(#[$doc:meta])* $name:ident -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name(&self, key: &str) -> Result<$ret, GgufError> {
            self.metadata.$name(key)
        }
    };
}

impl GgufFile {
    /// Maps the file at `path` read-only and parses it. What is not a regular file (a FIFO,
    /// a device, a directory) is refused with [`GgufError::Io`] before it is opened.
    ///
    /// The file must not be truncated or overwritten while the returned value lives (see
    /// `src/mmap.rs`; [`GgufFile::changed`] detects it, [`GgufFile::read`] avoids the map).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let map = Mmap::open(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_storage(Storage::Mmap(map))
    }

    /// Reads the whole file at `path` into memory and parses it: no map, so the file may be
    /// modified or removed while the returned value lives (at the cost of its size in RAM).
    /// What is not a regular file is refused, as by [`GgufFile::open`].
    pub fn read(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let bytes = crate::mmap::read_regular(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(bytes)
    }

    /// Parses a file held in memory (same checks as [`GgufFile::open`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::from_storage(Storage::Vec(bytes))
    }

    fn from_storage(storage: Storage) -> Result<Self, GgufError> {
        let parsed = parse(storage.bytes())?;
        Ok(Self {
            storage,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    /// The format version in the header (2 or 3; they share one layout).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data section and of every tensor (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section (tensor offsets are relative to it).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Whether the mapped file changed since it was mapped (truncated, resized, written, or
    /// its path now names another file): reading its bytes may then fault. Always `false`
    /// for bytes held in memory.
    pub fn changed(&self) -> bool {
        match &self.storage {
            Storage::Mmap(m) => m.changed(),
            Storage::Vec(_) => false,
        }
    }

    /// Whether the bytes are a memory map (from [`GgufFile::open`]) rather than a buffer.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mmap(_))
    }

    /// The metadata, in file order, with lookup by key.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    forward_getter!(
        /// See [`Metadata::get_u32`].
        get_u32 -> u32
    );
    forward_getter!(
        /// See [`Metadata::get_u64`].
        get_u64 -> u64
    );
    forward_getter!(
        /// See [`Metadata::get_i32`].
        get_i32 -> i32
    );
    forward_getter!(
        /// See [`Metadata::get_i64`].
        get_i64 -> i64
    );
    forward_getter!(
        /// See [`Metadata::get_f32`].
        get_f32 -> f32
    );
    forward_getter!(
        /// See [`Metadata::get_bool`].
        get_bool -> bool
    );
    forward_getter!(
        /// See [`Metadata::get_str`].
        get_str -> &str
    );
    forward_getter!(
        /// See [`Metadata::get_array`].
        get_array -> &Array
    );
    forward_getter!(
        /// See [`Metadata::get_str_array`].
        get_str_array -> &[String]
    );
    forward_getter!(
        /// See [`Metadata::get_f32_array`].
        get_f32_array -> &[f32]
    );
    forward_getter!(
        /// See [`Metadata::get_i32_array`].
        get_i32_array -> &[i32]
    );
    forward_getter!(
        /// See [`Metadata::get_u8_array`].
        get_u8_array -> Cow<'_, [u8]>
    );

    /// The tensor descriptors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.tensor_index.get(name)?;
        self.tensors.get(i)
    }

    /// The bytes of a tensor of this file, borrowed from the map (no copy).
    ///
    /// `info` should come from [`GgufFile::tensors`] or [`GgufFile::tensor`] of this file; every
    /// such tensor was checked to lie inside the data section when the file was parsed. An
    /// `info` that does not describe a range inside this file gives an empty slice.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        self.data_range(info.offset, info.size_bytes)
            .unwrap_or_default()
    }

    /// The descriptor and bytes of the tensor called `name`, or [`GgufError::MissingTensor`].
    pub fn require_tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_owned(),
        })?;
        Ok((info, self.tensor_data(info)))
    }

    /// `size` bytes at `offset` in the data section, if they lie inside the file.
    fn data_range(&self, offset: u64, size: u64) -> Option<&[u8]> {
        let start = self.data_offset.checked_add(offset)?;
        let end = start.checked_add(size)?;
        let start = usize::try_from(start).ok()?;
        let end = usize::try_from(end).ok()?;
        self.storage.bytes().get(start..end)
    }
}

/// Parses a whole GGUF file.
fn parse(bytes: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor::new(bytes);

    // Header: magic, version, tensor count, metadata count.
    let magic = cur.array::<4>(&|| "magic".to_owned())?;
    if &magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = cur.u32(&|| "version".to_owned())?;
    if !(version == 2 || version == 3) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let tensor_count_offset = cur.pos();
    let tensor_count = cur.u64(&|| "tensor count".to_owned())?;
    let kv_count_offset = cur.pos();
    let kv_count = cur.u64(&|| "metadata key-value count".to_owned())?;
    let n_kv = cur.check_count(kv_count, MIN_KV_BYTES, kv_count_offset, &|| {
        "metadata key-value count".to_owned()
    })?;
    let n_tensors = cur.check_count(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        tensor_count_offset,
        &|| "tensor count".to_owned(),
    )?;

    // Metadata.
    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let key = cur.string(to_u64(MAX_KEY_LEN), &|| {
            format!("key of metadata entry #{i}")
        })?;
        let value = read_kv_value(&mut cur, &key)?;
        metadata.push(key, value)?;
    }
    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(_) => u64::from(metadata.get_u32(ALIGNMENT_KEY)?),
    };
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment { alignment });
    }

    // Tensor infos.
    let mut tensors = Vec::new();
    let mut tensor_index = HashMap::new();
    for i in 0..n_tensors {
        let info = read_tensor_info(&mut cur, i, alignment)?;
        if tensor_index.contains_key(&info.name) {
            return Err(GgufError::DuplicateTensor { name: info.name });
        }
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    // Padding, then the data section, which runs to the end of the file.
    let infos_end = to_u64(cur.pos());
    let file_len = to_u64(bytes.len());
    let padded = align_up(infos_end, alignment).unwrap_or(u64::MAX);
    let data_offset = if padded <= file_len {
        padded
    } else if tensors.is_empty() {
        // Nothing to locate: tolerate a writer that omitted the final padding.
        file_len
    } else {
        return Err(GgufError::Truncated {
            what: "padding before the data section".to_owned(),
            offset: infos_end,
            needed: padded.saturating_sub(infos_end),
            available: file_len.saturating_sub(infos_end),
        });
    };
    let data_len = file_len.saturating_sub(data_offset);
    check_tensor_ranges(&tensors, data_len)?;

    Ok(Parsed {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

/// Reads the value type and value of the metadata entry `key`.
fn read_kv_value(cur: &mut Cursor<'_>, key: &str) -> Result<Value, GgufError> {
    let what = || format!("value of metadata key \"{key}\"");
    let ty = read_value_type(cur, &what)?;
    read_value(cur, ty, key, &what)
}

/// Reads a u32 value type id.
fn read_value_type(
    cur: &mut Cursor<'_>,
    what: &dyn Fn() -> String,
) -> Result<ValueType, GgufError> {
    let offset = cur.pos();
    let id = cur.u32(&|| format!("type of {}", what()))?;
    ValueType::from_id(id).ok_or_else(|| GgufError::BadValueType {
        what: what(),
        offset: to_u64(offset),
        id,
    })
}

/// Reads one value of type `ty` (a top-level metadata value).
fn read_value(
    cur: &mut Cursor<'_>,
    ty: ValueType,
    key: &str,
    what: &dyn Fn() -> String,
) -> Result<Value, GgufError> {
    Ok(match ty {
        ValueType::U8 => Value::U8(u8::from_le_bytes(cur.array(what)?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(cur.array(what)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array(what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array(what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(cur.array(what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array(what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array(what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(cur.array(what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array(what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array(what)?)),
        ValueType::Bool => {
            let offset = cur.pos();
            Value::Bool(to_bool(cur.u8(what)?, offset, what)?)
        }
        ValueType::String => Value::String(cur.string(to_u64(MAX_STRING_LEN), what)?),
        ValueType::Array => Value::Array(read_array(cur, key, 1)?),
    })
}

/// Decodes a GGUF bool byte.
fn to_bool(byte: u8, offset: usize, what: &dyn Fn() -> String) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(GgufError::BadBool {
            what: what(),
            offset: to_u64(offset),
            byte,
        }),
    }
}

/// Reads an array (element type, count, elements) at nesting level `depth` (1 for a
/// top-level array) of the value of `key`.
fn read_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array, GgufError> {
    let what = || {
        if depth == 1 {
            format!("array in metadata key \"{key}\"")
        } else {
            format!("array at nesting level {depth} in metadata key \"{key}\"")
        }
    };
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            what: what(),
            offset: to_u64(cur.pos()),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let ty = read_value_type(cur, &|| format!("element type of {}", what()))?;
    let count_offset = cur.pos();
    let count = cur.u64(&|| format!("length of {}", what()))?;
    let n = cur.check_count(count, ty.min_encoded_size(), count_offset, &|| {
        format!("length of {}", what())
    })?;
    let elements = || format!("elements of {}", what());
    Ok(match ty {
        ValueType::U8 => Array::U8(numbers(cur, n, &elements, u8::from_le_bytes)?),
        ValueType::I8 => Array::I8(numbers(cur, n, &elements, i8::from_le_bytes)?),
        ValueType::U16 => Array::U16(numbers(cur, n, &elements, u16::from_le_bytes)?),
        ValueType::I16 => Array::I16(numbers(cur, n, &elements, i16::from_le_bytes)?),
        ValueType::U32 => Array::U32(numbers(cur, n, &elements, u32::from_le_bytes)?),
        ValueType::I32 => Array::I32(numbers(cur, n, &elements, i32::from_le_bytes)?),
        ValueType::F32 => Array::F32(numbers(cur, n, &elements, f32::from_le_bytes)?),
        ValueType::U64 => Array::U64(numbers(cur, n, &elements, u64::from_le_bytes)?),
        ValueType::I64 => Array::I64(numbers(cur, n, &elements, i64::from_le_bytes)?),
        ValueType::F64 => Array::F64(numbers(cur, n, &elements, f64::from_le_bytes)?),
        ValueType::Bool => {
            let start = cur.pos();
            let bytes = cur.take(to_u64(n), &elements)?;
            let mut out = Vec::with_capacity(bytes.len());
            for (j, &b) in bytes.iter().enumerate() {
                out.push(to_bool(b, start.saturating_add(j), &|| {
                    format!("element {j} of {}", what())
                })?);
            }
            Array::Bool(out)
        }
        ValueType::String => {
            // `n` was checked against the remaining bytes (8 per element at least), so this
            // capacity is bounded by the file size.
            let mut out = Vec::with_capacity(n);
            for j in 0..n {
                out.push(cur.string(to_u64(MAX_STRING_LEN), &|| {
                    format!("element {j} of {}", what())
                })?);
            }
            Array::String(out)
        }
        ValueType::Array => {
            // Bounded as above (12 bytes per element at least).
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(read_array(cur, key, depth + 1)?);
            }
            Array::Array(out)
        }
    })
}

/// Reads `n` fixed-size little-endian numbers.
fn numbers<T, const N: usize>(
    cur: &mut Cursor<'_>,
    n: usize,
    what: &dyn Fn() -> String,
    decode: fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    let total = to_u64(n).saturating_mul(to_u64(N));
    let bytes = cur.take(total, what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut a = [0u8; N];
            a.copy_from_slice(chunk);
            decode(a)
        })
        .collect())
}

/// Reads the info of tensor number `index` and checks its shape, type and alignment.
fn read_tensor_info(
    cur: &mut Cursor<'_>,
    index: usize,
    alignment: u64,
) -> Result<TensorInfo, GgufError> {
    let name = cur.string(to_u64(MAX_TENSOR_NAME_LEN), &|| {
        format!("name of tensor #{index}")
    })?;
    let field = |f: &str| format!("{f} of tensor \"{name}\"");
    let n_dims = cur.u32(&|| field("dimension count"))?;
    if n_dims == 0 || n_dims > MAX_DIMS as u32 {
        return Err(GgufError::BadDimCount {
            tensor: name,
            n_dims,
        });
    }
    let mut dims = Vec::with_capacity(MAX_DIMS);
    for d in 0..n_dims {
        dims.push(cur.u64(&|| field(&format!("dimension {d}")))?);
    }
    let type_id = cur.u32(&|| field("type"))?;
    let offset = cur.u64(&|| field("data offset"))?;

    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
        tensor: name.clone(),
        id: type_id,
    })?;
    let size_bytes = data_size(&name, &dims, ty)?;
    if offset % alignment != 0 {
        return Err(GgufError::MisalignedTensor {
            tensor: name,
            offset,
            alignment,
        });
    }
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        size_bytes,
    })
}

/// Checks that every tensor lies inside the data section and that no two overlap.
fn check_tensor_ranges(tensors: &[TensorInfo], data_len: u64) -> Result<(), GgufError> {
    for t in tensors {
        let inside = t
            .offset
            .checked_add(t.size_bytes)
            .is_some_and(|end| end <= data_len);
        if !inside {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                size: t.size_bytes,
                data_len,
            });
        }
    }
    // Empty tensors occupy no bytes and cannot overlap anything.
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if let [a, b] = pair {
            // Cannot overflow: checked above.
            let a_end = a.offset.saturating_add(a.size_bytes);
            if a_end > b.offset {
                return Err(GgufError::OverlappingTensors {
                    first: a.name.clone(),
                    first_end: a_end,
                    second: b.name.clone(),
                    second_offset: b.offset,
                });
            }
        }
    }
    Ok(())
}
