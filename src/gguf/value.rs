//! Metadata values: the 13 GGUF value types, typed arrays, and the ordered key-value store.

use super::GgufError;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// A GGUF metadata value type, with its id as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    /// `uint8`.
    U8 = 0,
    /// `int8`.
    I8 = 1,
    /// `uint16`.
    U16 = 2,
    /// `int16`.
    I16 = 3,
    /// `uint32`.
    U32 = 4,
    /// `int32`.
    I32 = 5,
    /// `float32`.
    F32 = 6,
    /// `bool` (one byte, 0 or 1).
    Bool = 7,
    /// `string` (u64 length, UTF-8 bytes).
    String = 8,
    /// `array` (u32 element type, u64 count, elements).
    Array = 9,
    /// `uint64`.
    U64 = 10,
    /// `int64`.
    I64 = 11,
    /// `float64`.
    F64 = 12,
}

impl ValueType {
    /// Every value type, in id order.
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    /// The type with GGUF id `id`, if there is one.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(id).ok()?).copied()
    }

    /// The GGUF id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The type's name as used in error messages (`u32`, `string`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// Bytes of one value of a fixed-size type, `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }

    /// The fewest bytes one value of this type can take in a file: its fixed size, 8 for a
    /// string (the length of an empty string), 12 for an array (element type and count of an
    /// empty array). Used to bound counts by the bytes that remain.
    pub fn min_encoded_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            other => other.fixed_size().unwrap_or(1),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// `string`.
    String(String),
    /// `array`, stored typed.
    Array(Array),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl Value {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// A description of the type for messages: `u32`, `string`, `array of f32`, ...
    pub fn type_description(&self) -> String {
        match self {
            Value::Array(a) => format!("array of {}", a.element_type()),
            other => other.value_type().name().to_owned(),
        }
    }

    /// The value as an integer, if it is one of the eight integer types.
    pub fn as_integer(&self) -> Option<i128> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::I8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U64(v) => Some(v.into()),
            Value::I64(v) => Some(v.into()),
            _ => None,
        }
    }
}

/// An array value, stored typed so that large arrays (a 65k-entry vocabulary) cost one
/// allocation per string and none per number. Arrays of arrays hold each inner array typed in
/// turn; the inner arrays may have different element types.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// Array of `uint8`.
    U8(Vec<u8>),
    /// Array of `int8`.
    I8(Vec<i8>),
    /// Array of `uint16`.
    U16(Vec<u16>),
    /// Array of `int16`.
    I16(Vec<i16>),
    /// Array of `uint32`.
    U32(Vec<u32>),
    /// Array of `int32`.
    I32(Vec<i32>),
    /// Array of `float32`.
    F32(Vec<f32>),
    /// Array of `bool`.
    Bool(Vec<bool>),
    /// Array of `string`.
    String(Vec<String>),
    /// Array of arrays.
    Array(Vec<Array>),
    /// Array of `uint64`.
    U64(Vec<u64>),
    /// Array of `int64`.
    I64(Vec<i64>),
    /// Array of `float64`.
    F64(Vec<f64>),
}

impl Array {
    /// The element type.
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many levels of arrays this is: 1 for an array of scalars or strings (or an empty
    /// array of arrays), 1 + the deepest element for an array of arrays.
    pub fn depth(&self) -> usize {
        match self {
            Array::Array(inner) => 1 + inner.iter().map(Array::depth).max().unwrap_or(0),
            _ => 1,
        }
    }
}

/// Metadata key-value pairs in file order, with lookup by key. The reader produces one; the
/// writer consumes one. Keys are unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

/// Generates a typed `push_*` method.
macro_rules! push_fn {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $variant:expr) => {
        $(#[$doc])*
        pub fn $name(&mut self, key: impl Into<String>, value: $ty) -> Result<(), GgufError> {
            self.push(key, $variant(value))
        }
    };
}

impl Metadata {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key = value`; a key already present is an error ([`GgufError::DuplicateKey`]).
    pub fn push(&mut self, key: impl Into<String>, value: Value) -> Result<(), GgufError> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    push_fn!(
        /// Appends a `uint8` value.
        push_u8, u8, Value::U8
    );
    push_fn!(
        /// Appends an `int8` value.
        push_i8, i8, Value::I8
    );
    push_fn!(
        /// Appends a `uint16` value.
        push_u16, u16, Value::U16
    );
    push_fn!(
        /// Appends an `int16` value.
        push_i16, i16, Value::I16
    );
    push_fn!(
        /// Appends a `uint32` value.
        push_u32, u32, Value::U32
    );
    push_fn!(
        /// Appends an `int32` value.
        push_i32, i32, Value::I32
    );
    push_fn!(
        /// Appends a `float32` value.
        push_f32, f32, Value::F32
    );
    push_fn!(
        /// Appends a `bool` value.
        push_bool, bool, Value::Bool
    );
    push_fn!(
        /// Appends a `uint64` value.
        push_u64, u64, Value::U64
    );
    push_fn!(
        /// Appends an `int64` value.
        push_i64, i64, Value::I64
    );
    push_fn!(
        /// Appends a `float64` value.
        push_f64, f64, Value::F64
    );
    push_fn!(
        /// Appends an array value.
        push_array, Array, Value::Array
    );

    /// Appends a `string` value.
    pub fn push_str(&mut self, key: impl Into<String>, value: &str) -> Result<(), GgufError> {
        self.push(key, Value::String(value.to_owned()))
    }

    /// Appends an array of `string`.
    pub fn push_str_array(
        &mut self,
        key: impl Into<String>,
        values: Vec<String>,
    ) -> Result<(), GgufError> {
        self.push(key, Value::Array(Array::String(values)))
    }

    /// Appends an array of `float32`.
    pub fn push_f32_array(
        &mut self,
        key: impl Into<String>,
        values: Vec<f32>,
    ) -> Result<(), GgufError> {
        self.push(key, Value::Array(Array::F32(values)))
    }

    /// Appends an array of `int32`.
    pub fn push_i32_array(
        &mut self,
        key: impl Into<String>,
        values: Vec<i32>,
    ) -> Result<(), GgufError> {
        self.push(key, Value::Array(Array::I32(values)))
    }

    /// Appends an array of `uint8`.
    pub fn push_u8_array(
        &mut self,
        key: impl Into<String>,
        values: Vec<u8>,
    ) -> Result<(), GgufError> {
        self.push(key, Value::Array(Array::U8(values)))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in file (insertion) order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    /// Iterates `(key, value)` in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let &i = self.index.get(key)?;
        self.entries.get(i).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The value of `key`, or [`GgufError::MissingKey`].
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    /// The value of `key` as an integer of any of the eight integer types.
    fn integer(&self, key: &str, expected: &'static str) -> Result<i128, GgufError> {
        let value = self.require(key)?;
        value
            .as_integer()
            .ok_or_else(|| mismatch(key, expected, value))
    }

    /// `key` as a `u32`: any integer type whose value fits is accepted (llama.cpp writers use
    /// u32 in some places, i32 or u64 in others).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.integer(key, "an integer (u32)")?;
        u32::try_from(v).map_err(|_| out_of_range(key, v, "u32"))
    }

    /// `key` as a `u64`: any integer type whose value fits is accepted.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.integer(key, "an integer (u64)")?;
        u64::try_from(v).map_err(|_| out_of_range(key, v, "u64"))
    }

    /// `key` as an `i32`: any integer type whose value fits is accepted.
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        let v = self.integer(key, "an integer (i32)")?;
        i32::try_from(v).map_err(|_| out_of_range(key, v, "i32"))
    }

    /// `key` as an `i64`: any integer type whose value fits is accepted.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        let v = self.integer(key, "an integer (i64)")?;
        i64::try_from(v).map_err(|_| out_of_range(key, v, "i64"))
    }

    /// `key` as an `f32`: a `float32`, or a `float64` rounded to f32.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            other => Err(mismatch(key, "f32", other)),
        }
    }

    /// `key` as a `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            Value::Bool(v) => Ok(*v),
            other => Err(mismatch(key, "bool", other)),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            Value::String(v) => Ok(v),
            other => Err(mismatch(key, "string", other)),
        }
    }

    /// `key` as an array of any type.
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            other => Err(mismatch(key, "array", other)),
        }
    }

    /// `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        match self.require(key)? {
            Value::Array(Array::String(v)) => Ok(v),
            other => Err(mismatch(key, "array of string", other)),
        }
    }

    /// `key` as an array of `float32`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], GgufError> {
        match self.require(key)? {
            Value::Array(Array::F32(v)) => Ok(v),
            other => Err(mismatch(key, "array of f32", other)),
        }
    }

    /// `key` as an array of `int32`.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32], GgufError> {
        match self.require(key)? {
            Value::Array(Array::I32(v)) => Ok(v),
            other => Err(mismatch(key, "array of i32", other)),
        }
    }

    /// `key` as bytes: an array of `uint8` (borrowed) or of `int8` (reinterpreted as the same
    /// bytes, copied).
    pub fn get_u8_array(&self, key: &str) -> Result<Cow<'_, [u8]>, GgufError> {
        match self.require(key)? {
            Value::Array(Array::U8(v)) => Ok(Cow::Borrowed(v)),
            Value::Array(Array::I8(v)) => Ok(Cow::Owned(
                v.iter()
                    .map(|&b| u8::from_ne_bytes(b.to_ne_bytes()))
                    .collect(),
            )),
            other => Err(mismatch(key, "array of u8 or i8", other)),
        }
    }
}

/// A [`GgufError::TypeMismatch`] for `key`.
fn mismatch(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::TypeMismatch {
        key: key.to_owned(),
        expected,
        found: found.type_description(),
    }
}

/// A [`GgufError::OutOfRange`] for `key`.
fn out_of_range(key: &str, value: i128, expected: &'static str) -> GgufError {
    GgufError::OutOfRange {
        key: key.to_owned(),
        value: value.to_string(),
        expected,
    }
}
