//! Synthetic models: the real shapes with seeded random weights and a placeholder tokenizer,
//! for benchmarks and demos (real weights cannot be downloaded everywhere).

use super::plan::{build_plan, Role, TensorPlan};
use super::{BuildError, Progress, Summary, TensorSource, WriteOptions};
use crate::arch::Family;
use crate::model::{Block, Glm1Params, ModelConfig, RopeScaling};
use crate::tokenizer::proto::{
    ModelType, NormalizerSpec, PieceType, SpmModel, SpmPiece, TrainerSpec,
};
use crate::tokenizer::{ByteLevelParts, GgufVocabulary, TokenizerParts};
use std::sync::atomic::AtomicBool;

/// A named synthetic preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The ChatGLM2-6B shape: 28 layers, hidden 4096, 32 heads, 2 kv groups, ffn 13696.
    ChatGlm2_6b,
    /// The ChatGLM3-6B shape (as ChatGLM2-6B, with the ChatGLM3 prompt format, context 8192).
    ChatGlm3_6b,
    /// A tiny ChatGLM2-shaped model (hidden 128, 2 layers) for demos and tests.
    Tiny,
    /// The ChatGLM-6B (v1) shape: 28 layers, hidden 4096, 32 heads (a kv head each), inner
    /// 16384, vocabulary 130528, context 2048.
    ChatGlm6b,
    /// A tiny ChatGLM-6B-shaped model (hidden 128, 2 layers) for tests.
    TinyChatGlm1,
    /// The GLM-4-9B-chat shape: 40 layers, hidden 4096, 32 heads, 2 kv groups, ffn 13696,
    /// vocabulary 151552, context 131072, `rope_ratio` 500; a byte-level placeholder
    /// vocabulary (the 256 bytes and GLM-4's special tokens).
    Glm4_9b,
}

impl Preset {
    /// Every preset name accepted by `--synthetic`.
    pub const NAMES: [&'static str; 6] = [
        "chatglm2-6b",
        "chatglm3-6b",
        "tiny",
        "chatglm-6b",
        "tiny-chatglm1",
        "glm4-9b",
    ];

    /// Parses a preset name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "chatglm2-6b" => Some(Preset::ChatGlm2_6b),
            "chatglm3-6b" => Some(Preset::ChatGlm3_6b),
            "tiny" => Some(Preset::Tiny),
            "chatglm-6b" => Some(Preset::ChatGlm6b),
            "tiny-chatglm1" => Some(Preset::TinyChatGlm1),
            "glm4-9b" => Some(Preset::Glm4_9b),
            _ => None,
        }
    }

    /// The preset's name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::ChatGlm2_6b => "chatglm2-6b",
            Preset::ChatGlm3_6b => "chatglm3-6b",
            Preset::Tiny => "tiny",
            Preset::ChatGlm6b => "chatglm-6b",
            Preset::TinyChatGlm1 => "tiny-chatglm1",
            Preset::Glm4_9b => "glm4-9b",
        }
    }

    /// Size of the placeholder vocabulary's ordinary tokens (the real ChatGLM2/3 models have
    /// 64789 SentencePiece pieces, ChatGLM-6B's `ice_text.model` 130344; the GLM-4 placeholder
    /// has the 256 single bytes).
    pub fn sp_vocab_size(self) -> usize {
        match self {
            Preset::ChatGlm2_6b | Preset::ChatGlm3_6b => 64789,
            Preset::ChatGlm6b => 130344,
            Preset::Tiny | Preset::TinyChatGlm1 => 1000,
            Preset::Glm4_9b => 256,
        }
    }

    /// The prompt format (and special tokens) of the model.
    pub fn family(self) -> Family {
        match self {
            Preset::ChatGlm3_6b => Family::ChatGlm3,
            Preset::ChatGlm2_6b | Preset::Tiny => Family::ChatGlm2,
            Preset::ChatGlm6b | Preset::TinyChatGlm1 => Family::ChatGlm1,
            Preset::Glm4_9b => Family::Glm4,
        }
    }

    /// The model's configuration.
    pub fn config(self) -> ModelConfig {
        match self {
            Preset::ChatGlm2_6b | Preset::ChatGlm3_6b => ModelConfig {
                vocab_size: 65024,
                hidden_size: 4096,
                num_layers: 28,
                num_heads: 32,
                num_kv_groups: 2,
                head_dim: 128,
                ffn_hidden_size: 13696,
                context_length: if self == Preset::ChatGlm2_6b {
                    32768
                } else {
                    8192
                },
                rms_eps: 1e-5,
                rope_base: 10000.0,
                rope_scaling: RopeScaling::None,
                block: crate::model::Block::Glm2,
            },
            Preset::Glm4_9b => ModelConfig {
                vocab_size: 151552,
                hidden_size: 4096,
                num_layers: 40,
                num_heads: 32,
                num_kv_groups: 2,
                head_dim: 128,
                ffn_hidden_size: 13696,
                context_length: 131072,
                rms_eps: 1.5625e-7,
                rope_base: 10000.0,
                rope_scaling: RopeScaling::MultiplyBase(500.0),
                block: crate::model::Block::Glm2,
            },
            Preset::Tiny => ModelConfig {
                vocab_size: 1024,
                hidden_size: 128,
                num_layers: 2,
                num_heads: 4,
                num_kv_groups: 2,
                head_dim: 32,
                ffn_hidden_size: 320,
                context_length: 2048,
                rms_eps: 1e-5,
                rope_base: 10000.0,
                rope_scaling: RopeScaling::None,
                block: crate::model::Block::Glm2,
            },
            // The real config.json's sizes and ids (`[MASK]` 130000, `[gMASK]` 130001,
            // `<sop>` 130004); the placeholder vocabulary holds filler pieces there.
            Preset::ChatGlm6b => ModelConfig {
                vocab_size: 130528,
                hidden_size: 4096,
                num_layers: 28,
                num_heads: 32,
                num_kv_groups: 32,
                head_dim: 128,
                ffn_hidden_size: 16384,
                context_length: 2048,
                rms_eps: 1e-5,
                rope_base: 10000.0,
                rope_scaling: RopeScaling::None,
                block: glm1_block(130000, 130001, 130004),
            },
            Preset::TinyChatGlm1 => ModelConfig {
                vocab_size: 1024,
                hidden_size: 128,
                num_layers: 2,
                num_heads: 4,
                num_kv_groups: 4,
                head_dim: 32,
                ffn_hidden_size: 512,
                context_length: 2048,
                rms_eps: 1e-5,
                rope_base: 10000.0,
                rope_scaling: RopeScaling::None,
                block: glm1_block(990, 991, 994),
            },
        }
    }
}

/// The v1 block with the reference's residual scale `sqrt(2 * 28)` and these ids.
fn glm1_block(mask_token_id: u32, gmask_token_id: u32, sop_token_id: u32) -> Block {
    Block::Glm1(Glm1Params {
        residual_alpha: Glm1Params::reference_alpha(),
        mask_token_id,
        gmask_token_id,
        sop_token_id,
    })
}

/// A placeholder SentencePiece BPE model of `size` pieces: `<unk> <s> </s>`, the 256 byte
/// pieces, `▁` and the printable ASCII characters, then filler pieces made of lower-case
/// letters (with and without a leading `▁`) so that text encodes into something word-like.
/// Identity normalization with a dummy prefix, byte fallback: the settings ChatGLM's own
/// tokenizer uses. No piece is spelled like a special token of any family (those follow the
/// pieces in the file), so every token string of the vocabulary is unique.
pub fn placeholder_tokenizer(size: usize) -> SpmModel {
    let is_special = |w: &str| Family::ALL.iter().any(|f| f.special_tokens().contains(&w));
    let mut pieces: Vec<SpmPiece> = Vec::with_capacity(size);
    let push = |piece: String, kind: PieceType, pieces: &mut Vec<SpmPiece>| {
        let score = if matches!(kind, PieceType::Normal) {
            -(pieces.len() as f32)
        } else {
            0.0
        };
        pieces.push(SpmPiece { piece, score, kind });
    };
    push("<unk>".into(), PieceType::Unknown, &mut pieces);
    push("<s>".into(), PieceType::Control, &mut pieces);
    push("</s>".into(), PieceType::Control, &mut pieces);
    for b in 0..=255u8 {
        push(format!("<0x{b:02X}>"), PieceType::Byte, &mut pieces);
    }
    push("\u{2581}".into(), PieceType::Normal, &mut pieces);
    for c in '!'..='~' {
        push(c.to_string(), PieceType::Normal, &mut pieces);
    }
    // Filler: "▁a".."▁z", "aa".."zz", "▁aa".., "aaa".. in order until the vocabulary is full.
    let letters: Vec<char> = ('a'..='z').collect();
    let mut len = 1;
    'fill: while pieces.len() < size {
        let count = letters.len().pow(len as u32);
        for prefix in ["\u{2581}", ""] {
            if len == 1 && prefix.is_empty() {
                continue; // single letters are already in the ASCII set
            }
            for mut k in 0..count {
                if pieces.len() >= size {
                    break 'fill;
                }
                let mut word = String::from(prefix);
                let mut chars = Vec::with_capacity(len);
                for _ in 0..len {
                    chars.push(letters[k % letters.len()]);
                    k /= letters.len();
                }
                word.extend(chars.iter().rev());
                // A piece spelled like a special token ("sop", "eop") would give two ids
                // one string, which other GGUF readers (llama.cpp) refuse.
                if is_special(&word) {
                    continue;
                }
                push(word, PieceType::Normal, &mut pieces);
            }
        }
        len += 1;
    }
    pieces.truncate(size);
    SpmModel {
        pieces,
        normalizer: NormalizerSpec {
            name: "identity".into(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: false,
            escape_whitespaces: true,
        },
        trainer: TrainerSpec {
            model_type: ModelType::Bpe,
            vocab_size: size as i32,
            byte_fallback: true,
            split_digits: true,
            allow_whitespace_only_pieces: true,
            ..TrainerSpec::default()
        },
        denormalizer: None,
    }
}

/// A small, fast, seedable generator (SplitMix64, Steele et al. 2014).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn next_symmetric(&mut self) -> f32 {
        // 24 random bits -> [0, 1), then to [-1, 1).
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Fills `out` with the values of tensor number `index` of the plan. Matrices are uniform with
/// standard deviation `1/sqrt(cols)` (so activations keep their scale through the layers),
/// norms are 1 with ±10% noise, biases are small. Every row has its own stream seeded from
/// `(seed, index, row)`, so the values do not depend on how rows are split between threads.
pub fn fill_tensor(plan: &TensorPlan, index: usize, seed: u64, out: &mut [f32], threads: usize) {
    let cols = plan.cols().max(1);
    let (scale, offset) = match plan.role {
        Role::Matrix => ((3.0 / cols as f32).sqrt(), 0.0),
        Role::Norm => (0.1, 1.0),
        Role::Bias => (0.02, 0.0),
    };
    let fill_rows = |first_row: usize, chunk: &mut [f32]| {
        for (r, row) in chunk.chunks_mut(cols).enumerate() {
            let row_id = (first_row + r) as u64;
            let mut rng = SplitMix64(
                seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407)
                    ^ row_id.wrapping_mul(0x9FB2_1C65_1E98_DF25),
            );
            for v in row {
                *v = offset + scale * rng.next_symmetric();
            }
        }
    };
    let rows = out.len() / cols;
    let threads = threads.clamp(1, rows.max(1));
    let rows_per = rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (i, chunk) in out.chunks_mut(rows_per * cols).enumerate() {
            let fill_rows = &fill_rows;
            s.spawn(move || fill_rows(i * rows_per, chunk));
        }
    });
}

/// A tiktoken rank file of the 256 single bytes (rank = byte value).
fn placeholder_ranks() -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..=255u8)
        .map(|b| {
            let (hi, lo) = (b >> 2, (b & 3) << 4);
            format!(
                "{}{}== {b}\n",
                B64[hi as usize] as char, B64[lo as usize] as char
            )
        })
        .collect()
}

/// Seeded random values for every tensor ([`fill_tensor`]).
pub struct SyntheticSource {
    /// The seed.
    pub seed: u64,
}

impl TensorSource for SyntheticSource {
    fn read(
        &mut self,
        t: &TensorPlan,
        index: usize,
        threads: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BuildError> {
        out.resize(t.numel(), 0.0);
        fill_tensor(t, index, self.seed, out, threads);
        Ok(())
    }
}

/// Writes the synthetic model `preset` with seed `seed` (see [`super::write_model`]).
pub fn write_synthetic(
    preset: Preset,
    seed: u64,
    opts: &WriteOptions,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, BuildError> {
    let mix = super::Mix::from(opts.matrix_type);
    write_synthetic_mix(preset, seed, opts, mix, progress, cancel)
}

/// [`write_synthetic`] with each matrix's type chosen by `mix` (llama-quantize's rules for
/// its named mixes, see [`super::Mix`]) and the mix's `general.file_type`.
pub fn write_synthetic_mix(
    preset: Preset,
    seed: u64,
    opts: &WriteOptions,
    mix: super::Mix,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, BuildError> {
    let config = preset.config();
    let spm;
    let bytes;
    let tokenizer: &dyn GgufVocabulary = if preset.family().is_byte_level() {
        bytes = ByteLevelParts::glm4_from_tiktoken(&placeholder_ranks(), Some(config.vocab_size))?;
        &bytes
    } else {
        spm = TokenizerParts::from_spm(
            placeholder_tokenizer(preset.sp_vocab_size()),
            preset.family(),
            Some(config.vocab_size),
        )?;
        &spm
    };
    let plan = build_plan(&config, mix, opts.portable)?;
    super::write_model_mix(
        &config,
        tokenizer,
        plan,
        &mut SyntheticSource { seed },
        opts,
        mix,
        progress,
        cancel,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use chatglm_kernels::GgmlType;

    #[test]
    fn placeholder_token_strings_are_unique() {
        // The 6B vocabulary reaches the three-letter filler ("sop", "eop" among them).
        for family in [Family::ChatGlm2, Family::ChatGlm3] {
            let parts = TokenizerParts::from_spm(
                placeholder_tokenizer(Preset::ChatGlm2_6b.sp_vocab_size()),
                family,
                Some(Preset::ChatGlm2_6b.config().vocab_size),
            )
            .unwrap();
            let mut seen = std::collections::HashSet::new();
            for t in &parts.tokens {
                assert!(seen.insert(t.as_str()), "{family:?}: {t:?} twice");
            }
            assert!(parts.tokens.iter().any(|t| t == "sop"));
        }
    }

    #[test]
    fn glm4_9b_has_glm4_9b_parameters() {
        let plan = build_plan(&Preset::Glm4_9b.config(), GgmlType::Q4_0, true).unwrap();
        let params: usize = plan.iter().map(|t| t.numel()).sum();
        // glm-4-9b-chat: 9.40 B parameters (the stored inv_freq excluded).
        assert!((9.39e9..9.41e9).contains(&(params as f64)), "{params}");
        assert_eq!(Preset::from_name("glm4-9b"), Some(Preset::Glm4_9b));
        assert_eq!(Preset::Glm4_9b.family(), Family::Glm4);
    }

    #[test]
    fn glm4_placeholder_vocabulary_is_every_byte() {
        let parts = ByteLevelParts::glm4_from_tiktoken(&placeholder_ranks(), Some(151552)).unwrap();
        assert_eq!(parts.tokens.len(), 151552);
        let tok = crate::tokenizer::Tokenizer::from_byte_level_parts(parts).unwrap();
        assert_eq!(tok.sp_vocab_size(), 256);
        let text = "GLM-4 你好";
        assert_eq!(tok.encode(text).len(), text.len());
        assert_eq!(tok.decode(&tok.encode(text)).unwrap(), text);
        assert_eq!(tok.prompt_prefix(), [258, 260]);
    }

    #[test]
    fn placeholder_vocab_has_the_asked_size_and_unique_pieces() {
        for size in [300, 1000, 64789] {
            let m = placeholder_tokenizer(size);
            assert_eq!(m.pieces.len(), size);
            let mut seen = std::collections::HashSet::new();
            assert!(m.pieces.iter().all(|p| seen.insert(p.piece.clone())));
        }
    }

    #[test]
    fn values_do_not_depend_on_thread_count() {
        let plan = build_plan(&Preset::Tiny.config(), GgmlType::Q4_0, true).unwrap();
        let t = &plan[2];
        let mut a = vec![0.0; t.numel()];
        let mut b = vec![0.0; t.numel()];
        fill_tensor(t, 2, 7, &mut a, 1);
        fill_tensor(t, 2, 7, &mut b, 3);
        assert_eq!(a, b);
        let mut c = vec![0.0; t.numel()];
        fill_tensor(t, 2, 8, &mut c, 1);
        assert_ne!(a, c);
        let std = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
        let want = 1.0 / (t.cols() as f32).sqrt();
        assert!((std - want).abs() < 0.1 * want, "std {std} want {want}");
    }
}
