//! The error type of the GGUF reader and writer.

use chatglm_kernels::GgmlType;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Every variant names what it is about: the metadata key, the tensor, or (for problems found
/// before a key or tensor name is known) the byte offset in the file. `what` fields are short
/// descriptions such as `value of metadata key "general.name"` or `name of tensor #3`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Writing to the output failed.
    #[error("writing the GGUF output failed: {0}")]
    Write(#[source] io::Error),

    /// The file does not start with the bytes `GGUF`.
    #[error(
        "not a GGUF file: the first 4 bytes are {found:02x?}, expected \"GGUF\" (47 47 55 46)"
    )]
    BadMagic {
        /// The first four bytes of the file.
        found: [u8; 4],
    },

    /// The version field is not one this reader understands (2 and 3 are read).
    #[error("GGUF version {version} at byte 4 is not supported: {}", version_hint(*.version))]
    UnsupportedVersion {
        /// The version as read (little-endian).
        version: u32,
    },

    /// The file ends before a field is complete.
    #[error(
        "file is truncated: {what} at byte {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        /// The field being read.
        what: String,
        /// Byte offset of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },

    /// A count (of metadata entries, tensors or array elements) is larger than the rest of the
    /// file could possibly hold.
    #[error(
        "{what} at byte {offset} is {count}, more than the {available} remaining bytes can hold"
    )]
    CountTooLarge {
        /// Which count.
        what: String,
        /// Byte offset of the count field.
        offset: u64,
        /// The count as read.
        count: u64,
        /// Bytes left in the file after the count field.
        available: u64,
    },

    /// A string is longer than the reader's limit for that kind of string.
    #[error("{what} at byte {offset}: length {len} exceeds the limit of {max} bytes")]
    StringTooLong {
        /// Which string.
        what: String,
        /// Byte offset of the length field.
        offset: u64,
        /// The length as read.
        len: u64,
        /// The limit.
        max: u64,
    },

    /// A key, string value or tensor name is not valid UTF-8.
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// Byte offset of the string's first byte.
        offset: u64,
    },

    /// A metadata value type id (or array element type id) is not one of the 13 GGUF types.
    #[error("{what} at byte {offset}: unknown GGUF value type id {id}")]
    BadValueType {
        /// Which value.
        what: String,
        /// Byte offset of the type id.
        offset: u64,
        /// The id as read.
        id: u32,
    },

    /// A bool value is a byte other than 0 or 1.
    #[error("{what} at byte {offset}: bool byte is {byte}, expected 0 or 1")]
    BadBool {
        /// Which value.
        what: String,
        /// Byte offset of the byte.
        offset: u64,
        /// The byte as read.
        byte: u8,
    },

    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`](super::MAX_ARRAY_DEPTH).
    #[error("{what} at byte {offset}: arrays nested more than {max} levels deep")]
    NestingTooDeep {
        /// Which value.
        what: String,
        /// Byte offset of the array that is one level too deep.
        offset: u64,
        /// The limit.
        max: usize,
    },

    /// The same metadata key appears twice.
    #[error("duplicate metadata key \"{key}\"")]
    DuplicateKey {
        /// The key.
        key: String,
    },

    /// A metadata key the caller asked for is absent.
    #[error("metadata key \"{key}\" is missing")]
    MissingKey {
        /// The key.
        key: String,
    },

    /// A metadata value has a type other than the one asked for.
    #[error("metadata key \"{key}\": expected {expected}, found {found}")]
    TypeMismatch {
        /// The key.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The type in the file.
        found: String,
    },

    /// An integer metadata value does not fit the integer type asked for.
    #[error("metadata key \"{key}\": value {value} does not fit in {expected}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The value, printed.
        value: String,
        /// The type asked for.
        expected: &'static str,
    },

    /// `general.alignment` is zero or not a power of two.
    #[error("metadata key \"general.alignment\" is {alignment}: the alignment must be a non-zero power of two")]
    BadAlignment {
        /// The alignment as read.
        alignment: u64,
    },

    /// The same tensor name appears twice.
    #[error("duplicate tensor name \"{name}\"")]
    DuplicateTensor {
        /// The name.
        name: String,
    },

    /// A tensor the caller asked for is absent.
    #[error("tensor \"{name}\" is missing")]
    MissingTensor {
        /// The name.
        name: String,
    },

    /// A tensor has zero or more than [`MAX_DIMS`](super::MAX_DIMS) dimensions.
    #[error("tensor \"{tensor}\": {n_dims} dimensions, expected 1 to {max}", max = super::MAX_DIMS)]
    BadDimCount {
        /// The tensor.
        tensor: String,
        /// The number of dimensions as read.
        n_dims: u32,
    },

    /// A tensor's dimensions multiply to more than `i64::MAX` elements (ggml counts elements in
    /// `int64_t`), one dimension alone exceeds it, or the byte size overflows `u64`.
    #[error("tensor \"{tensor}\": dimensions {dims:?} overflow the element count (max i64::MAX) or the byte size")]
    ElementCountOverflow {
        /// The tensor.
        tensor: String,
        /// The dimensions as read.
        dims: Vec<u64>,
    },

    /// A tensor type id whose block geometry this crate does not know (an id ggml removed,
    /// named in the message, or one it never defined), so the tensor's size is unknown.
    #[error("tensor \"{tensor}\": {}", unknown_type_text(*.id))]
    UnknownTensorType {
        /// The tensor.
        tensor: String,
        /// The id as read.
        id: u32,
    },

    /// A tensor's row length (`dims[0]`) is not a whole number of blocks of its type.
    #[error("tensor \"{tensor}\": row length {row_len} is not a multiple of the {ty} block size {block}")]
    RowNotBlockMultiple {
        /// The tensor.
        tensor: String,
        /// The type.
        ty: GgmlType,
        /// `dims[0]`.
        row_len: u64,
        /// Elements per block of `ty`.
        block: u64,
    },

    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error(
        "tensor \"{tensor}\": data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        /// The tensor.
        tensor: String,
        /// The offset as read (relative to the data section).
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// A tensor's bytes do not lie inside the data section (or the file is truncated there).
    #[error("tensor \"{tensor}\": {size} bytes at data offset {offset} run past the end of the {data_len}-byte data section")]
    TensorOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Offset relative to the data section.
        offset: u64,
        /// Size in bytes.
        size: u64,
        /// Bytes in the data section (from its start to the end of the file).
        data_len: u64,
    },

    /// Two tensors' byte ranges overlap.
    #[error("tensors \"{first}\" and \"{second}\" overlap: \"{first}\" ends at data offset {first_end}, \"{second}\" starts at {second_offset}")]
    OverlappingTensors {
        /// The tensor that starts first.
        first: String,
        /// Where it ends (exclusive, relative to the data section).
        first_end: u64,
        /// The tensor that starts inside it.
        second: String,
        /// Where that one starts.
        second_offset: u64,
    },

    /// The writer cannot encode a value as given (a string too long for the reader's limits,
    /// arrays nested too deep, a tensor name too long...).
    #[error("cannot write {what}: {reason}")]
    Unwritable {
        /// The key, value or tensor.
        what: String,
        /// Why.
        reason: String,
    },

    /// The writer was given tensor data out of order, for an unknown tensor, or of the wrong
    /// size, or was finished before every tensor was written.
    #[error("tensor \"{tensor}\": {problem}")]
    WriteOrder {
        /// The tensor concerned.
        tensor: String,
        /// What the caller did wrong.
        problem: String,
    },
}

/// The explanation printed after an unsupported version number.
fn version_hint(version: u32) -> &'static str {
    if version == 1 {
        "version 1 used 32-bit counts and lengths and has been obsolete since 2023; re-convert the model"
    } else if (1..=3).contains(&version.swap_bytes()) {
        "this looks like a big-endian GGUF file; only little-endian files are supported"
    } else {
        "this reader reads GGUF versions 2 and 3"
    }
}

/// `ggml type id 31 (Q4_0_4_4, removed from ggml; convert the file again)` or `unknown ggml
/// type id 99`.
fn unknown_type_text(id: u32) -> String {
    match GgmlType::name_of_id(id) {
        Some(name) => format!(
            "ggml type id {id} ({name}, removed from ggml; convert the file again with a current tool)"
        ),
        None => format!("unknown ggml type id {id}"),
    }
}
