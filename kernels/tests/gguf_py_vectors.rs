//! This crate's dequantizers and quantizers against an independent implementation: gguf-py's
//! numpy port of ggml (`gguf.quants`, version recorded in the vectors), on random blocks of
//! every type of issue 11 (`tests/data/make_gguf_py_vectors.py` wrote them). A layout error
//! (a nibble, bit or scale in the wrong place) moves values by whole steps; the values here
//! agree to within 2 ulps (numpy may order a product of three factors differently), the
//! quantized bytes exactly.

use chatglm_kernels::quant::{dequantize_row, quantize_row};
use chatglm_kernels::GgmlType;

fn vectors() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/gguf_py_vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ty(name: &str) -> GgmlType {
    GgmlType::from_name(name).unwrap_or_else(|| panic!("{name}"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Distance in units in the last place (f32 bit patterns, same sign).
fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    if a.signum() != b.signum() {
        return u32::MAX;
    }
    a.to_bits().abs_diff(b.to_bits())
}

#[test]
fn dequantized_blocks_equal_gguf_py() {
    let v = vectors();
    let cases = v["dequantized"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for c in cases {
        let t = ty(c["type"].as_str().unwrap());
        let bytes = hex(c["bytes"].as_str().unwrap());
        let want = floats(&c["values"]);
        let mut got = vec![f32::NAN; want.len()];
        dequantize_row(t, &bytes, &mut got).unwrap();
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(ulps(g, w) <= 2, "{t} element {i}: {g} vs gguf-py {w}");
        }
    }
}

#[test]
fn quantized_rows_equal_gguf_py() {
    let v = vectors();
    let cases = v["quantized"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let t = ty(c["type"].as_str().unwrap());
        let x = floats(&c["input"]);
        let want = hex(c["bytes"].as_str().unwrap());
        let mut got = vec![0u8; want.len()];
        quantize_row(t, &x, &mut got).unwrap();
        assert_eq!(got, want, "{t}");
    }
}
