//! The GGUF metadata the converter writes: hyper-parameters under llama.cpp's `chatglm.*` keys
//! and the tokenizer under `tokenizer.ggml.*` (see `chatglm::arch` and docs/FORMAT.md).

use crate::error::ConvertError;
use crate::plan::ModelShape;
use chatglm::arch::{keys, Family, ARCHITECTURE};
use chatglm::gguf::{Array, Value};
use chatglm::tokenizer::proto::{PieceType, SpmModel};
use chatglm_kernels::GgmlType;

/// Ordered key/value pairs, as they will appear in the file.
pub type KeyValues = Vec<(String, Value)>;

/// llama.cpp's `llama_ftype` for a file whose matrices are `ty`.
pub fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q8_1 => 1024, // never a weight type; no llama.cpp value
        // Row-interleaved forms: the ftype of the blocks they hold.
        GgmlType::Q4_0x8 => 2,
        GgmlType::Q8_0x8 => 7,
    }
}

fn u32_of(n: usize, what: &str) -> Result<Value, ConvertError> {
    u32::try_from(n)
        .map(Value::U32)
        .map_err(|_| ConvertError::Invalid(format!("{what} = {n} does not fit in u32")))
}

/// `general.*` and `chatglm.*` keys for a model of `shape` whose matrices are `ty`.
pub fn model_metadata(
    shape: &ModelShape,
    ty: GgmlType,
    name: &str,
) -> Result<KeyValues, ConvertError> {
    let mut m: KeyValues = vec![
        (
            keys::GENERAL_ARCHITECTURE.into(),
            Value::String(ARCHITECTURE.into()),
        ),
        (keys::GENERAL_NAME.into(), Value::String(name.into())),
        (keys::GENERAL_FILE_TYPE.into(), Value::U32(file_type(ty))),
        (keys::GENERAL_QUANTIZATION_VERSION.into(), Value::U32(2)),
        (
            keys::CONTEXT_LENGTH.into(),
            u32_of(shape.context_length, "seq_length")?,
        ),
        (
            keys::EMBEDDING_LENGTH.into(),
            u32_of(shape.hidden_size, "hidden_size")?,
        ),
        (
            keys::FEED_FORWARD_LENGTH.into(),
            u32_of(shape.ffn_hidden_size, "ffn_hidden_size")?,
        ),
        (
            keys::BLOCK_COUNT.into(),
            u32_of(shape.num_layers, "num_layers")?,
        ),
        (
            keys::HEAD_COUNT.into(),
            u32_of(shape.num_heads, "num_attention_heads")?,
        ),
        (
            keys::HEAD_COUNT_KV.into(),
            u32_of(shape.num_kv_groups, "multi_query_group_num")?,
        ),
        (
            keys::HEAD_DIM.into(),
            u32_of(shape.head_dim, "kv_channels")?,
        ),
        (keys::RMS_EPS.into(), Value::F32(shape.rms_eps)),
        (
            keys::ROPE_DIMENSION_COUNT.into(),
            u32_of(shape.head_dim / 2, "kv_channels / 2")?,
        ),
    ];
    // ChatGLM3 checkpoints multiply the RoPE base by `rope_ratio`; ChatGLM2 (the 32k variant)
    // divides positions by it, which is llama.cpp's linear RoPE scaling.
    let ratio = shape.rope_ratio.unwrap_or(1.0);
    let base = match shape.family {
        Family::ChatGlm3 => 10000.0 * ratio,
        Family::ChatGlm2 => 10000.0,
    };
    m.push((keys::ROPE_FREQ_BASE.into(), Value::F32(base)));
    if shape.family == Family::ChatGlm2 && ratio != 1.0 {
        m.push((
            keys::ROPE_SCALING_TYPE.into(),
            Value::String("linear".into()),
        ));
        m.push((keys::ROPE_SCALING_FACTOR.into(), Value::F32(ratio)));
    }
    m.push((keys::ROPE_RATIO.into(), Value::F32(ratio)));
    m.push((
        keys::PROMPT_FORMAT.into(),
        Value::String(shape.family.name().into()),
    ));
    Ok(m)
}

/// `tokenizer.ggml.*` keys: the SentencePiece pieces, then the family's special tokens
/// (control pieces, exactly as the Hugging Face tokenizer numbers them), then `[PAD{id}]`
/// unused pieces up to `vocab_size` so that there is one piece per embedding row (what
/// llama.cpp's converter writes for this family).
pub fn tokenizer_metadata(
    spm: &SpmModel,
    family: Family,
    vocab_size: usize,
) -> Result<KeyValues, ConvertError> {
    let n = spm.pieces.len();
    let specials = family.special_tokens();
    if n + specials.len() > vocab_size {
        return Err(ConvertError::Invalid(format!(
            "tokenizer has {n} pieces + {} special tokens, more than padded_vocab_size = {vocab_size}",
            specials.len()
        )));
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut scores = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for p in &spm.pieces {
        tokens.push(p.piece.clone());
        scores.push(p.score);
        types.push(p.kind as i32);
    }
    for s in specials {
        tokens.push((*s).to_string());
        scores.push(0.0);
        types.push(PieceType::Control as i32);
    }
    while tokens.len() < vocab_size {
        tokens.push(format!("[PAD{}]", tokens.len()));
        scores.push(0.0);
        types.push(PieceType::Unused as i32);
    }
    let id = |v: i32, what: &str| -> Result<Option<Value>, ConvertError> {
        match usize::try_from(v) {
            Ok(i) if i < n => Ok(Some(Value::U32(i as u32))),
            Ok(i) => Err(ConvertError::Invalid(format!(
                "tokenizer {what} {i} is outside the {n} pieces"
            ))),
            Err(_) => Ok(None), // -1: not defined
        }
    };
    let t = &spm.trainer;
    let norm = &spm.normalizer;
    let mut m: KeyValues = vec![
        (keys::TOKENIZER_MODEL.into(), Value::String("llama".into())),
        (
            keys::TOKENIZER_PRE.into(),
            Value::String("chatglm-spm".into()),
        ),
        (
            keys::TOKENIZER_TOKENS.into(),
            Value::Array(Array::String(tokens)),
        ),
        (
            keys::TOKENIZER_SCORES.into(),
            Value::Array(Array::F32(scores)),
        ),
        (
            keys::TOKENIZER_TOKEN_TYPE.into(),
            Value::Array(Array::I32(types)),
        ),
    ];
    let unk = id(t.unk_id, "unk_id")?;
    for (key, value) in [
        (keys::TOKENIZER_UNK_ID, unk.clone()),
        (keys::TOKENIZER_BOS_ID, id(t.bos_id, "bos_id")?),
        (keys::TOKENIZER_EOS_ID, id(t.eos_id, "eos_id")?),
        // The Hugging Face ChatGLM tokenizer pads with <unk> when the model has no pad piece.
        (keys::TOKENIZER_PAD_ID, id(t.pad_id, "pad_id")?.or(unk)),
    ] {
        if let Some(v) = value {
            m.push((key.into(), v));
        }
    }
    if family == Family::ChatGlm3 {
        // <|user|>: the end of an assistant turn.
        m.push((keys::TOKENIZER_EOT_ID.into(), Value::U32((n + 6) as u32)));
    }
    m.push((keys::TOKENIZER_ADD_BOS.into(), Value::Bool(false)));
    m.push((
        keys::TOKENIZER_ADD_SPACE_PREFIX.into(),
        Value::Bool(norm.add_dummy_prefix),
    ));
    m.push((
        keys::TOKENIZER_REMOVE_EXTRA_WS.into(),
        Value::Bool(norm.remove_extra_whitespaces),
    ));
    if !norm.precompiled_charsmap.is_empty() {
        m.push((
            keys::TOKENIZER_PRECOMPILED_CHARSMAP.into(),
            Value::Array(Array::U8(norm.precompiled_charsmap.clone())),
        ));
    }
    m.push((
        keys::TOKENIZER_ESCAPE_WS.into(),
        Value::Bool(norm.escape_whitespaces),
    ));
    m.push((
        keys::TOKENIZER_WS_AS_SUFFIX.into(),
        Value::Bool(t.treat_whitespace_as_suffix),
    ));
    m.push((
        keys::TOKENIZER_BYTE_FALLBACK.into(),
        Value::Bool(t.byte_fallback),
    ));
    m.push((
        keys::TOKENIZER_NORMALIZER.into(),
        Value::String(norm.name.clone()),
    ));
    m.push((
        keys::TOKENIZER_SP_VOCAB_SIZE.into(),
        u32_of(n, "SentencePiece vocabulary size")?,
    ));
    Ok(m)
}
