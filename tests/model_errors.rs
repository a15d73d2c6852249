//! Bad weights and bad calls give typed errors that name the problem, never panics.

mod model_common;

use chatglm::arch::tensors::{self, Role};
use chatglm::model::{
    ConfigError, KvType, Logits, Model, ModelConfig, ModelError, RopeScaling, StateOptions,
    TensorEntry,
};
use chatglm_kernels::GgmlType;
use model_common::Builder;
use std::collections::HashMap;
use std::sync::Arc;

fn config() -> ModelConfig {
    ModelConfig {
        vocab_size: 6,
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_groups: 2,
        head_dim: 8,
        ffn_hidden_size: 48,
        context_length: 16,
        rms_eps: 1e-5,
        rope_base: 10000.0,
        rope_scaling: RopeScaling::MultiplyBase(2.0),
        block: chatglm::model::Block::Glm2,
    }
}

/// Deterministic pseudo-random values in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Every tensor of the table for `c`, matrices in a mix of f16 and f32.
fn builder(c: &ModelConfig) -> Builder {
    let mut b = Builder::default();
    for (seed, (t, layer)) in tensors::in_file_order(c.num_layers).enumerate() {
        let shape = t.shape(c).unwrap();
        let ty = match (t.role, t.gguf) {
            (Role::Matrix, "attn_output.weight" | "ffn_down.weight") => GgmlType::F32,
            (Role::Matrix, _) => GgmlType::F16,
            _ => GgmlType::F32,
        };
        let n = shape.iter().product();
        b.add(&t.gguf_name(layer), &shape, &values(n, seed as u64 + 1), ty);
    }
    b
}

/// Loads after `edit` changed the entries.
fn load_with(edit: impl FnOnce(&mut HashMap<String, TensorEntry>)) -> Result<Model, ModelError> {
    let b = builder(&config());
    let mut entries = b.entries;
    edit(&mut entries);
    Model::load(&config(), Arc::new(b.bytes), |n| entries.get(n).cloned())
}

#[test]
fn model_load_ok_and_shareable() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let m = load_with(|_| {}).unwrap();
    shareable(&m);
    assert_eq!(m.weights().matrix_types().len(), 2 + 4 * 2);
}

#[test]
fn model_load_errors_name_the_tensor() {
    let e = load_with(|e| {
        e.remove("blk.1.ffn_down.weight");
    });
    assert!(matches!(e, Err(ModelError::MissingTensor(ref n)) if n == "blk.1.ffn_down.weight"));

    let e = load_with(|e| e.get_mut("token_embd.weight").unwrap().dims.reverse());
    match e {
        Err(ModelError::TensorShape {
            name,
            expected,
            got,
        }) => {
            assert_eq!(name, "token_embd.weight");
            assert_eq!((expected, got), (vec![32, 6], vec![6, 32]));
        }
        other => panic!("{other:?}"),
    }

    let e = load_with(|e| e.get_mut("blk.0.attn_norm.weight").unwrap().ty = GgmlType::F16);
    assert!(
        matches!(e, Err(ModelError::TensorType { ref name, ty: GgmlType::F16, .. })
        if name == "blk.0.attn_norm.weight")
    );

    let e = load_with(|e| e.get_mut("output.weight").unwrap().ty = GgmlType::Q8_1);
    match e {
        Err(ModelError::UnsupportedTypes(ref t)) => {
            assert_eq!(t, &[("output.weight".to_string(), GgmlType::Q8_1)]);
            let msg = e.unwrap_err().to_string();
            assert!(
                msg.starts_with(
                    "tensor \"output.weight\" has type Q8_1 (9), which this runtime cannot run yet; supported: F32, F16, Q4_0"
                ),
                "{msg}"
            );
            assert!(msg.contains("Q4_K") && msg.contains("IQ4_XS"), "{msg}");
        }
        other => panic!("{other:?}"),
    }

    // Every unsupported matrix is named in one error, in file order.
    let e = load_with(|e| {
        e.get_mut("blk.1.ffn_up.weight").unwrap().ty = GgmlType::IQ2_XXS;
        e.get_mut("blk.0.attn_qkv.weight").unwrap().ty = GgmlType::TQ1_0;
        e.get_mut("output.weight").unwrap().ty = GgmlType::IQ2_XXS;
    });
    match e {
        Err(ModelError::UnsupportedTypes(ref t)) => {
            let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                [
                    "blk.0.attn_qkv.weight",
                    "blk.1.ffn_up.weight",
                    "output.weight"
                ]
            );
            let msg = e.unwrap_err().to_string();
            assert!(
                msg.starts_with("3 tensors have types this runtime cannot run yet"),
                "{msg}"
            );
            assert!(
                msg.contains("\n  tensor \"blk.1.ffn_up.weight\" has type IQ2_XXS (16)"),
                "{msg}"
            );
            assert!(
                msg.contains("tensor \"blk.0.attn_qkv.weight\" has type TQ1_0 (34)"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }

    let e = load_with(|e| {
        let r = &mut e.get_mut("output.weight").unwrap().range;
        *r = r.start + 1_000_000..r.end + 1_000_000;
    });
    assert!(matches!(e, Err(ModelError::TensorData { ref name, .. }) if name == "output.weight"));

    let e = load_with(|e| e.get_mut("blk.0.attn_qkv.bias").unwrap().range.end -= 4);
    assert!(
        matches!(e, Err(ModelError::TensorSize { ref name, got, .. })
        if name == "blk.0.attn_qkv.bias" && got == 4 * 64 - 4)
    );

    // ffn_down rows are 48 elements: not a whole number of q4_0 blocks of 32.
    let e = load_with(|e| {
        let t = e.get_mut("blk.0.ffn_down.weight").unwrap();
        t.ty = GgmlType::Q4_0;
        t.range.end = t.range.start + 32 * 48 / 32 * 18;
    });
    assert!(
        matches!(e, Err(ModelError::RowNotBlocks { ref name, cols: 48, .. })
        if name == "blk.0.ffn_down.weight")
    );

    let mut bad = config();
    bad.num_kv_groups = 3;
    let b = builder(&config());
    let entries = b.entries;
    let e = Model::load(&bad, Arc::new(b.bytes), |n| entries.get(n).cloned());
    assert!(matches!(
        e,
        Err(ModelError::Config(
            ConfigError::HeadsNotMultipleOfGroups { .. }
        ))
    ));
}

#[test]
fn model_forward_errors() {
    let m = builder(&config()).load(&config());
    let opts = StateOptions {
        context: 8,
        batch: 3,
        kv_type: KvType::F16,
        threads: 2,
    };
    let mut st = m.new_state(opts).unwrap();
    assert!(matches!(
        m.forward(&mut st, &[], 0, Logits::Last),
        Err(ModelError::EmptyInput)
    ));
    assert!(matches!(
        m.forward(&mut st, &[1, 6], 0, Logits::Last),
        Err(ModelError::TokenOutOfRange {
            index: 1,
            token: 6,
            vocab: 6
        })
    ));
    assert!(matches!(
        m.forward(&mut st, &[1], 1, Logits::Last),
        Err(ModelError::PositionGap {
            start_pos: 1,
            cached: 0
        })
    ));
    assert!(matches!(
        m.forward(&mut st, &[1, 2, 3, 4], 0, Logits::All),
        Err(ModelError::BatchTooSmall {
            tokens: 4,
            batch: 3
        })
    ));
    // Seven tokens in batches of 3, then the cache is full.
    let logits = m
        .forward(&mut st, &[0, 1, 2, 3, 4, 5, 0], 0, Logits::Last)
        .unwrap();
    assert_eq!(logits.len(), 6);
    assert!(logits.iter().all(|v| v.is_finite()));
    assert!(matches!(
        m.forward(&mut st, &[1, 2], 7, Logits::Last),
        Err(ModelError::ContextFull {
            needed: 9,
            capacity: 8
        })
    ));
    // The failed call left the cache alone; one more token fits.
    assert_eq!(st.kv_cache().len(), 7);
    m.forward(&mut st, &[1], 7, Logits::Last).unwrap();
    assert_eq!(st.kv_cache().len(), 8);

    // A state built for another configuration is refused.
    let mut other = config();
    other.context_length = 32;
    let mut foreign = chatglm::model::RunState::new(&other, opts).unwrap();
    assert!(matches!(
        m.forward(&mut foreign, &[1], 0, Logits::Last),
        Err(ModelError::StateMismatch)
    ));

    for (context, batch, what) in [
        (17, 1, "context"),
        (0, 1, "context"),
        (8, 0, "batch"),
        (8, 9, "batch"),
    ] {
        let e = m.new_state(StateOptions {
            context,
            batch,
            kv_type: KvType::F32,
            threads: 2,
        });
        assert!(
            matches!(e, Err(ModelError::StateOption { what: w, .. }) if w == what),
            "{context} {batch}"
        );
    }
}

/// A tiny ChatGLM-6B (v1) model: every tensor of the v1 table; loading names a missing bias,
/// and a prompt without `<sop>` or a call inside the context is a typed error.
#[test]
fn model_glm1_errors_name_the_problem() {
    use chatglm::arch::tensors::GLM1;
    use chatglm::model::{Block, Glm1Params};
    let c = ModelConfig {
        num_kv_groups: 4,
        block: Block::Glm1(Glm1Params {
            residual_alpha: Glm1Params::reference_alpha(),
            mask_token_id: 3,
            gmask_token_id: 4,
            sop_token_id: 5,
        }),
        rope_scaling: RopeScaling::None,
        ..config()
    };
    let mut b = Builder::default();
    for (seed, (t, layer)) in GLM1.in_file_order(c.num_layers).enumerate() {
        let shape = t.shape(&c).unwrap();
        let ty = if t.role == Role::Matrix {
            GgmlType::F16
        } else {
            GgmlType::F32
        };
        let n = shape.iter().product();
        b.add(&t.gguf_name(layer), &shape, &values(n, seed as u64 + 1), ty);
    }
    let (bytes, entries) = (Arc::new(b.bytes), b.entries);
    let e = Model::load(&c, bytes.clone(), |n| {
        (n != "blk.1.ffn_up.bias").then(|| entries.get(n).cloned())?
    });
    assert!(matches!(e, Err(ModelError::MissingTensor(ref n)) if n == "blk.1.ffn_up.bias"));
    let m = Model::load(&c, bytes, |n| entries.get(n).cloned()).unwrap();
    // Tied: no output.weight, and the matrices listed are the table's.
    assert_eq!(m.weights().matrix_types().len(), 1 + 4 * 2);
    let mut st = m
        .new_state(StateOptions {
            context: 16,
            batch: 2,
            kv_type: KvType::F32,
            threads: 1,
        })
        .unwrap();
    let e = m.forward(&mut st, &[0, 1, 4], 0, Logits::Last).unwrap_err();
    assert!(matches!(e, ModelError::Glm1NoToken { id: 5, .. }), "{e}");
    assert!(e.to_string().contains("<sop>"), "{e}");
    let logits = m
        .forward(&mut st, &[0, 1, 2, 4, 5], 0, Logits::Last)
        .unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
    let e = m.forward(&mut st, &[1], 2, Logits::Last).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::Glm1Context {
                start_pos: 2,
                context_length: Some(4)
            }
        ),
        "{e}"
    );
    // Logits of every row need the batch to hold them, as for ChatGLM2/3.
    let e = m
        .forward(&mut st, &[0, 1, 2, 4, 5], 0, Logits::All)
        .unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::BatchTooSmall {
                tokens: 5,
                batch: 2
            }
        ),
        "{e}"
    );
    // A decode step after the context.
    let pos = st.kv_cache().len();
    assert_eq!(pos, 5);
    m.forward(&mut st, &[1], pos, Logits::Last).unwrap();
    assert_eq!(st.glm1_layout().unwrap().position(pos), (3, 2));
}
