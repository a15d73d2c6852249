//! The streaming GGUF writer.
//!
//! The caller declares the metadata and every tensor (name, dimensions, type) up front; the
//! writer emits the header, the metadata, the tensor infos (with offsets it computes) and the
//! padding at once. Then the caller hands over each tensor's bytes, in declaration order,
//! whole ([`GgufWriter::write_tensor`]) or in chunks ([`GgufWriter::begin_tensor`] +
//! [`GgufWriter::write_chunk`]); the writer pads after each. Nothing needs `Seek`, and only the
//! chunk in hand is ever in memory.
//!
//! Anything the reader would reject is refused before the first byte is written.

use super::tensor::data_size;
use super::{
    align_up, Array, GgufError, Metadata, TensorDesc, TensorInfo, Value, ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_ARRAY_DEPTH, MAX_KEY_LEN, MAX_STRING_LEN,
    MAX_WRITTEN_TENSOR_NAME_LEN,
};
use std::collections::HashSet;
use std::io::Write;

/// Writes one GGUF v3 file to `W`. Wrap a [`std::fs::File`] in a [`std::io::BufWriter`].
///
/// After any error the output is incomplete; drop the writer.
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
    /// Bytes written to `out` so far.
    pos: u64,
    /// Index of the tensor to be written next (or being written).
    next: usize,
    /// Bytes of tensor `next` written so far, once it has begun.
    in_progress: Option<u64>,
}

impl<W: Write> GgufWriter<W> {
    /// Checks `metadata` and `tensors`, computes every tensor's offset, and writes the
    /// header, metadata, tensor infos and the padding before the data section.
    ///
    /// The alignment is `general.alignment` from `metadata` if present (it must be a `u32`
    /// power of two), else 32.
    pub fn new(mut out: W, metadata: &Metadata, tensors: &[TensorDesc]) -> Result<Self, GgufError> {
        let alignment = alignment_of(metadata)?;
        for (key, value) in metadata.iter() {
            check_key(key)?;
            check_value(key, value)?;
        }
        let infos = layout(tensors, alignment)?;

        let mut head = Vec::new();
        head.extend_from_slice(GGUF_MAGIC);
        head.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        head.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata.iter() {
            put_string(&mut head, key);
            head.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut head, value);
        }
        for t in &infos {
            put_string(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&t.offset.to_le_bytes());
        }
        let head_len = head.len() as u64;
        let data_offset =
            align_up(head_len, alignment).ok_or(GgufError::BadAlignment { alignment })?;
        head.resize(head.len() + (data_offset - head_len) as usize, 0);
        out.write_all(&head).map_err(GgufError::Write)?;

        Ok(Self {
            out,
            tensors: infos,
            alignment,
            data_offset,
            pos: data_offset,
            next: 0,
            in_progress: None,
        })
    }

    /// The tensors as they are described in the file (with offsets and sizes).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The alignment in use.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Writes all the bytes of tensor `name`, which must be the next declared tensor (a
    /// zero-byte tensor is written with an empty slice).
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        if self.in_progress.is_some() {
            return Err(order_error(
                name,
                "write_tensor called while another tensor is being written in chunks".to_owned(),
            ));
        }
        let expected = self.expect_next(name)?;
        if data.len() as u64 != expected {
            return Err(order_error(
                name,
                format!("expected {expected} bytes, got {}", data.len()),
            ));
        }
        self.begin_tensor(name)?;
        if data.is_empty() {
            // A zero-byte tensor is complete as soon as it is begun.
            Ok(())
        } else {
            self.write_chunk(data)
        }
    }

    /// Starts writing tensor `name`, which must be the next declared tensor; its bytes follow
    /// through [`GgufWriter::write_chunk`]. A zero-byte tensor is complete once begun.
    pub fn begin_tensor(&mut self, name: &str) -> Result<(), GgufError> {
        if let (Some(written), Some(t)) = (self.in_progress, self.tensors.get(self.next)) {
            return Err(order_error(
                &t.name,
                format!(
                    "begin_tensor(\"{name}\") called after only {written} of {} bytes were written",
                    t.size_bytes
                ),
            ));
        }
        let size = self.expect_next(name)?;
        self.in_progress = Some(0);
        if size == 0 {
            self.complete()?;
        }
        Ok(())
    }

    /// Appends bytes to the tensor begun with [`GgufWriter::begin_tensor`]. When its last
    /// byte arrives the writer pads to the alignment and moves on to the next tensor.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), GgufError> {
        let (Some(written), Some(t)) = (self.in_progress, self.tensors.get(self.next)) else {
            let name = self
                .tensors
                .get(self.next)
                .map_or("(none)", |t| t.name.as_str());
            return Err(order_error(
                name,
                "write_chunk called without begin_tensor".to_owned(),
            ));
        };
        let total = written.saturating_add(chunk.len() as u64);
        if total > t.size_bytes {
            return Err(order_error(
                &t.name,
                format!(
                    "a chunk of {} bytes after {written} would exceed the size of {} bytes",
                    chunk.len(),
                    t.size_bytes
                ),
            ));
        }
        self.out.write_all(chunk).map_err(GgufError::Write)?;
        self.pos += chunk.len() as u64;
        self.in_progress = Some(total);
        if total == t.size_bytes {
            self.complete()?;
        }
        Ok(())
    }

    /// Checks that every tensor was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if let Some(t) = self.tensors.get(self.next) {
            let problem = match self.in_progress {
                Some(written) => format!(
                    "only {written} of {} bytes were written before finish",
                    t.size_bytes
                ),
                None => format!(
                    "never written ({} of {} tensors were written before finish)",
                    self.next,
                    self.tensors.len()
                ),
            };
            return Err(order_error(&t.name, problem));
        }
        self.out.flush().map_err(GgufError::Write)?;
        Ok(self.out)
    }

    /// Checks that `name` is the tensor to be written next; returns its size.
    fn expect_next(&self, name: &str) -> Result<u64, GgufError> {
        match self.tensors.get(self.next) {
            Some(t) if t.name == name => Ok(t.size_bytes),
            Some(t) => {
                let declared = self.tensors.iter().any(|d| d.name == name);
                let problem = if declared {
                    format!("written out of order: \"{}\" comes next", t.name)
                } else {
                    "was not declared".to_owned()
                };
                Err(order_error(name, problem))
            }
            None => {
                let declared = self.tensors.iter().any(|d| d.name == name);
                let problem = if declared {
                    "written twice (every declared tensor is already written)"
                } else {
                    "was not declared"
                };
                Err(order_error(name, problem.to_owned()))
            }
        }
    }

    /// Ends the current tensor: pads to the alignment and moves on to the next one.
    fn complete(&mut self) -> Result<(), GgufError> {
        self.in_progress = None;
        self.pad()?;
        self.next += 1;
        Ok(())
    }

    /// Writes zero bytes up to the next multiple of the alignment.
    fn pad(&mut self) -> Result<(), GgufError> {
        let target = align_up(self.pos, self.alignment).ok_or(GgufError::BadAlignment {
            alignment: self.alignment,
        })?;
        let zeros = [0u8; 64];
        let mut left = target - self.pos;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.out.write_all(&zeros[..n]).map_err(GgufError::Write)?;
            left -= n as u64;
        }
        self.pos = target;
        Ok(())
    }
}

/// A [`GgufError::WriteOrder`].
fn order_error(tensor: &str, problem: String) -> GgufError {
    GgufError::WriteOrder {
        tensor: tensor.to_owned(),
        problem,
    }
}

/// The alignment `metadata` asks for.
fn alignment_of(metadata: &Metadata) -> Result<u64, GgufError> {
    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => u64::from(*a),
        Some(other) => {
            return Err(GgufError::TypeMismatch {
                key: ALIGNMENT_KEY.to_owned(),
                expected: "u32",
                found: other.type_description(),
            })
        }
    };
    if alignment.is_power_of_two() {
        Ok(alignment)
    } else {
        Err(GgufError::BadAlignment { alignment })
    }
}

/// Checks a key against the reader's limit.
fn check_key(key: &str) -> Result<(), GgufError> {
    if key.len() > MAX_KEY_LEN {
        return Err(GgufError::Unwritable {
            what: format!("metadata key \"{}...\"", prefix(key)),
            reason: format!("{} bytes, the limit is {MAX_KEY_LEN}", key.len()),
        });
    }
    Ok(())
}

/// Checks string lengths and array nesting in the value of `key`.
fn check_value(key: &str, value: &Value) -> Result<(), GgufError> {
    match value {
        Value::String(s) => check_string(key, s),
        Value::Array(a) => {
            if a.depth() > MAX_ARRAY_DEPTH {
                return Err(GgufError::Unwritable {
                    what: format!("metadata key \"{key}\""),
                    reason: format!(
                        "arrays nested {} levels deep, the limit is {MAX_ARRAY_DEPTH}",
                        a.depth()
                    ),
                });
            }
            check_array_strings(key, a)
        }
        _ => Ok(()),
    }
}

/// Checks the strings inside an array.
fn check_array_strings(key: &str, array: &Array) -> Result<(), GgufError> {
    match array {
        Array::String(v) => v.iter().try_for_each(|s| check_string(key, s)),
        Array::Array(v) => v.iter().try_for_each(|a| check_array_strings(key, a)),
        _ => Ok(()),
    }
}

/// Checks one string value against the reader's limit.
fn check_string(key: &str, s: &str) -> Result<(), GgufError> {
    if s.len() > MAX_STRING_LEN {
        return Err(GgufError::Unwritable {
            what: format!("a string in metadata key \"{key}\""),
            reason: format!("{} bytes, the limit is {MAX_STRING_LEN}", s.len()),
        });
    }
    Ok(())
}

/// The first few characters of a long string, for messages.
fn prefix(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks the tensors and assigns offsets: each tensor starts at the first multiple of
/// `alignment` after the previous one.
fn layout(tensors: &[TensorDesc], alignment: u64) -> Result<Vec<TensorInfo>, GgufError> {
    let mut names = HashSet::new();
    let mut infos = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        if t.name.len() > MAX_WRITTEN_TENSOR_NAME_LEN {
            return Err(GgufError::Unwritable {
                what: format!("tensor \"{}\"", t.name),
                reason: format!(
                    "its name is {} bytes, the limit is {MAX_WRITTEN_TENSOR_NAME_LEN} (llama.cpp's GGML_MAX_NAME - 1)",
                    t.name.len()
                ),
            });
        }
        if !names.insert(t.name.as_str()) {
            return Err(GgufError::DuplicateTensor {
                name: t.name.clone(),
            });
        }
        let size_bytes = data_size(&t.name, &t.dims, t.ty)?;
        let overflow = || GgufError::ElementCountOverflow {
            tensor: t.name.clone(),
            dims: t.dims.clone(),
        };
        infos.push(TensorInfo {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
            offset,
            size_bytes,
        });
        let end = offset.checked_add(size_bytes).ok_or_else(overflow)?;
        offset = align_up(end, alignment).ok_or_else(overflow)?;
    }
    Ok(infos)
}

/// Appends a GGUF string (u64 length, bytes).
fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends the encoding of `value` (without its type id).
fn put_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => buf.push(u8::from(*v)),
        Value::String(s) => put_string(buf, s),
        Value::Array(a) => put_array(buf, a),
        Value::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
    }
}

/// Appends an array: element type id, u64 count, elements.
fn put_array(buf: &mut Vec<u8>, array: &Array) {
    buf.extend_from_slice(&array.element_type().id().to_le_bytes());
    buf.extend_from_slice(&(array.len() as u64).to_le_bytes());
    match array {
        Array::U8(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I8(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::U16(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => v.iter().for_each(|&x| buf.push(u8::from(x))),
        Array::String(v) => v.iter().for_each(|s| put_string(buf, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(buf, a)),
        Array::U64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
    }
}
