//! Helpers shared by the GGUF integration tests: sample files, a temp-file guard, and byte
//! patching.
#![allow(dead_code)]

use chatglm::gguf::{Array, GgufWriter, Metadata, TensorDesc, Value};
use chatglm_kernels::GgmlType;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Deterministic pseudo-random bytes (a 64-bit LCG), so data differs between tensors.
pub fn pseudo_random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// A tensor to write: its descriptor and its bytes.
pub struct SampleTensor {
    pub desc: TensorDesc,
    pub data: Vec<u8>,
}

impl SampleTensor {
    pub fn new(name: &str, dims: &[u64], ty: GgmlType, seed: u64) -> Self {
        let desc = TensorDesc::new(name, dims, ty);
        let size = desc.size_bytes().expect("valid sample tensor") as usize;
        Self {
            desc,
            data: pseudo_random_bytes(seed, size),
        }
    }
}

/// Metadata with every value type, nested and empty arrays, empty and non-ASCII strings, and
/// the given alignment (if any).
pub fn full_metadata(alignment: Option<u32>) -> Metadata {
    let mut m = Metadata::new();
    m.push_str("general.architecture", "chatglm").unwrap();
    if let Some(a) = alignment {
        m.push_u32("general.alignment", a).unwrap();
    }
    m.push_u8("test.u8", 0xfe).unwrap();
    m.push_i8("test.i8", -128).unwrap();
    m.push_u16("test.u16", 65_535).unwrap();
    m.push_i16("test.i16", -12_345).unwrap();
    m.push_u32("test.u32", 4_000_000_000).unwrap();
    m.push_i32("test.i32", -2_000_000_000).unwrap();
    m.push_f32("test.f32", -1.5e-7).unwrap();
    m.push_bool("test.bool_true", true).unwrap();
    m.push_bool("test.bool_false", false).unwrap();
    m.push_str("test.string", "hello").unwrap();
    m.push_str("test.empty_string", "").unwrap();
    m.push_str("test.unicode", "问：你好 ▁ 😀 \u{0}").unwrap();
    m.push_u64("test.u64", u64::MAX).unwrap();
    m.push_i64("test.i64", i64::MIN).unwrap();
    m.push_f64("test.f64", std::f64::consts::PI).unwrap();
    m.push_str("测试.ключ", "unicode key").unwrap();
    m.push_u8_array("test.arr.u8", vec![0, 1, 255]).unwrap();
    m.push_array("test.arr.i8", Array::I8(vec![-1, 0, 127, -128]))
        .unwrap();
    m.push_array("test.arr.u16", Array::U16(vec![1, 65_535]))
        .unwrap();
    m.push_array("test.arr.i16", Array::I16(vec![-32_768, 7]))
        .unwrap();
    m.push_array("test.arr.u32", Array::U32(vec![u32::MAX, 0, 3]))
        .unwrap();
    m.push_i32_array("test.arr.i32", vec![1, -2, 3, i32::MIN])
        .unwrap();
    m.push_f32_array(
        "test.arr.f32",
        vec![0.0, -0.0, 1.25, f32::MAX, f32::INFINITY],
    )
    .unwrap();
    m.push_array("test.arr.bool", Array::Bool(vec![true, false, true]))
        .unwrap();
    m.push_str_array(
        "test.arr.string",
        vec!["a".into(), "".into(), "▁tok".into(), "<0x0A>".into()],
    )
    .unwrap();
    m.push_array("test.arr.u64", Array::U64(vec![u64::MAX, 1]))
        .unwrap();
    m.push_array("test.arr.i64", Array::I64(vec![i64::MIN, -1]))
        .unwrap();
    m.push_array("test.arr.f64", Array::F64(vec![1e300, -2.5]))
        .unwrap();
    m.push_array("test.arr.empty_u8", Array::U8(vec![]))
        .unwrap();
    m.push_array("test.arr.empty_string", Array::String(vec![]))
        .unwrap();
    m.push_array("test.arr.empty_array", Array::Array(vec![]))
        .unwrap();
    m.push_array(
        "test.arr.nested",
        Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::String(vec!["x".into(), "".into()]),
            Array::Array(vec![
                Array::F32(vec![0.5]),
                Array::Array(vec![Array::U8(vec![9, 8]), Array::Bool(vec![])]),
            ]),
            Array::F64(vec![]),
        ]),
    )
    .unwrap();
    m.push("test.value", Value::U16(7)).unwrap();
    m
}

/// Tensors of every type the project writes, with varied shapes (1 to 4 dims), and an empty
/// one.
pub fn full_tensors() -> Vec<SampleTensor> {
    vec![
        SampleTensor::new("f32.vec", &[7], GgmlType::F32, 1),
        SampleTensor::new("f32.mat", &[3, 5], GgmlType::F32, 2),
        SampleTensor::new("f16.3d", &[9, 2, 3], GgmlType::F16, 3),
        SampleTensor::new("f16.empty", &[4, 0], GgmlType::F16, 4),
        SampleTensor::new("q4_0.vec", &[32], GgmlType::Q4_0, 5),
        SampleTensor::new("q4_0.mat", &[64, 3], GgmlType::Q4_0, 6),
        SampleTensor::new("q4_1.3d", &[32, 2, 2], GgmlType::Q4_1, 7),
        SampleTensor::new("q4_1.mat", &[96, 5], GgmlType::Q4_1, 8),
        SampleTensor::new("q8_0.4d", &[96, 1, 2, 3], GgmlType::Q8_0, 9),
        SampleTensor::new("q8_0.mat", &[32, 7], GgmlType::Q8_0, 10),
        SampleTensor::new("blk.0.attn_qkv.weight", &[64, 4], GgmlType::Q8_0, 11),
    ]
}

/// A small file for exhaustive truncation: a few keys (string array, nested array) and three
/// tensors.
pub fn small_metadata() -> Metadata {
    let mut m = Metadata::new();
    m.push_str("general.architecture", "chatglm").unwrap();
    m.push_u32("chatglm.block_count", 2).unwrap();
    m.push_f32("chatglm.rope.freq_base", 10_000.0).unwrap();
    m.push_bool("test.flag", true).unwrap();
    m.push_str_array("tokenizer.ggml.tokens", vec!["<unk>".into(), "▁a".into()])
        .unwrap();
    m.push_array(
        "test.nested",
        Array::Array(vec![
            Array::U16(vec![1, 2]),
            Array::String(vec!["z".into()]),
        ]),
    )
    .unwrap();
    m
}

/// The tensors of the small file.
pub fn small_tensors() -> Vec<SampleTensor> {
    vec![
        SampleTensor::new("norm", &[5], GgmlType::F32, 21),
        SampleTensor::new("w4", &[32, 2], GgmlType::Q4_0, 22),
        SampleTensor::new("w8", &[32], GgmlType::Q8_0, 23),
    ]
}

/// Writes a whole file to memory.
pub fn write_to_vec(metadata: &Metadata, tensors: &[SampleTensor]) -> Vec<u8> {
    let descs: Vec<TensorDesc> = tensors.iter().map(|t| t.desc.clone()).collect();
    let mut w = GgufWriter::new(Vec::new(), metadata, &descs).expect("writer accepts the sample");
    for t in tensors {
        w.write_tensor(&t.desc.name, &t.data)
            .expect("tensor written");
    }
    w.finish().expect("finish")
}

/// The first position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// The offset of the u64 length field of the GGUF string `s` (the first occurrence of its
/// length prefix followed by its bytes).
pub fn string_field(file: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    find(file, &needle)
}

/// Byte offsets of the fields of a tensor info, located by the tensor's name.
pub struct TensorFields {
    pub name: usize,
    pub n_dims: usize,
    pub dims: usize,
    pub ty: usize,
    pub offset: usize,
    pub end: usize,
}

/// Locates the info fields of tensor `name` with `n_dims` dimensions.
pub fn tensor_fields(file: &[u8], name: &str, n_dims: usize) -> TensorFields {
    let name_at = string_field(file, name);
    let n_dims_at = name_at + 8 + name.len();
    let dims = n_dims_at + 4;
    let ty = dims + 8 * n_dims;
    TensorFields {
        name: name_at,
        n_dims: n_dims_at,
        dims,
        ty,
        offset: ty + 4,
        end: ty + 12,
    }
}

/// Overwrites little-endian `u32` at `at`.
pub fn put_u32(file: &mut [u8], at: usize, v: u32) {
    file[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Overwrites little-endian `u64` at `at`.
pub fn put_u64(file: &mut [u8], at: usize, v: u64) {
    file[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Reads little-endian `u64` at `at`.
pub fn get_u64(file: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(file[at..at + 8].try_into().unwrap())
}

/// A path in the temp directory that is removed on drop.
pub struct TempPath(pub PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("chatglm-gguf-test-{}-{tag}-{n}.gguf", std::process::id());
        Self(std::env::temp_dir().join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
