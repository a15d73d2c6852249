//! The `chatglm` architecture's GGUF vocabulary: metadata keys and tensor names, shared by the
//! converter (which writes them) and the runtime (which reads them). See `docs/FORMAT.md`.
//!
//! Keys and names follow llama.cpp's conventions for `general.architecture = "chatglm"`, so a
//! file written with `--portable` loads there; keys llama.cpp has no name for live under
//! `chatglm.` with names of our own.

/// The value of `general.architecture`.
pub const ARCHITECTURE: &str = "chatglm";

/// Metadata keys.
pub mod keys {
    /// `general.architecture` (string).
    pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
    /// `general.name` (string).
    pub const GENERAL_NAME: &str = "general.name";
    /// `general.file_type` (u32, llama.cpp's `llama_ftype`: 0 all f32, 1 mostly f16, 2 q4_0,
    /// 3 q4_1, 7 q8_0).
    pub const GENERAL_FILE_TYPE: &str = "general.file_type";
    /// `general.quantization_version` (u32, 2 as in current ggml).
    pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";

    /// Maximum context the model was trained for (u32; HF `seq_length`).
    pub const CONTEXT_LENGTH: &str = "chatglm.context_length";
    /// Hidden size (u32).
    pub const EMBEDDING_LENGTH: &str = "chatglm.embedding_length";
    /// MLP inner size F (u32); `ffn_up` has 2F rows.
    pub const FEED_FORWARD_LENGTH: &str = "chatglm.feed_forward_length";
    /// Number of transformer layers (u32).
    pub const BLOCK_COUNT: &str = "chatglm.block_count";
    /// Number of query heads (u32).
    pub const HEAD_COUNT: &str = "chatglm.attention.head_count";
    /// Number of key/value groups of multi-query attention (u32).
    pub const HEAD_COUNT_KV: &str = "chatglm.attention.head_count_kv";
    /// Per-head size (u32; HF `kv_channels`). Our own key: llama.cpp derives it from
    /// `embedding_length / head_count`, which holds for the released models.
    pub const HEAD_DIM: &str = "chatglm.attention.key_length";
    /// RMSNorm epsilon (f32).
    pub const RMS_EPS: &str = "chatglm.attention.layer_norm_rms_epsilon";
    /// Number of rotated dimensions per head (u32) = head_dim / 2.
    pub const ROPE_DIMENSION_COUNT: &str = "chatglm.rope.dimension_count";
    /// RoPE base (f32): 10000, times `rope_ratio` for ChatGLM3 checkpoints that set it.
    pub const ROPE_FREQ_BASE: &str = "chatglm.rope.freq_base";
    /// `"linear"` when positions are divided by [`ROPE_SCALING_FACTOR`] (ChatGLM2-32k's
    /// `rope_ratio`); absent otherwise.
    pub const ROPE_SCALING_TYPE: &str = "chatglm.rope.scaling.type";
    /// The divisor of positions for linear RoPE scaling (f32).
    pub const ROPE_SCALING_FACTOR: &str = "chatglm.rope.scaling.factor";
    /// Our own: the checkpoint's `rope_ratio` as found in config.json (f32; 1 when absent).
    pub const ROPE_RATIO: &str = "chatglm.rope.ratio";
    /// Our own: which prompt format the model expects, `"chatglm2"` or `"chatglm3"`.
    pub const PROMPT_FORMAT: &str = "chatglm.prompt_format";

    /// Tokenizer model kind (string, `"llama"` = SentencePiece).
    pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
    /// Pre-tokenizer name (string; llama.cpp uses `"chatglm-spm"` for this family).
    pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
    /// Token pieces (array of strings), one per embedding row.
    pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
    /// Piece scores (array of f32).
    pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
    /// Piece types (array of i32, SentencePiece's values: 1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte).
    pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    /// Unknown-piece id (u32).
    pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    /// BOS id (u32).
    pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    /// EOS id (u32).
    pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    /// End-of-turn id (u32; ChatGLM3's `<|user|>`).
    pub const TOKENIZER_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    /// Padding id (u32).
    pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    /// Whether to add BOS (bool; false: ChatGLM prompts start with `[gMASK] sop` instead).
    pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    /// SentencePiece `add_dummy_prefix` (bool).
    pub const TOKENIZER_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    /// SentencePiece `remove_extra_whitespaces` (bool).
    pub const TOKENIZER_REMOVE_EXTRA_WS: &str = "tokenizer.ggml.remove_extra_whitespaces";
    /// SentencePiece precompiled normalization map (array of u8; absent for identity).
    pub const TOKENIZER_PRECOMPILED_CHARSMAP: &str = "tokenizer.ggml.precompiled_charsmap";
    /// Our own: SentencePiece `escape_whitespaces` (bool).
    pub const TOKENIZER_ESCAPE_WS: &str = "chatglm.tokenizer.escape_whitespaces";
    /// Our own: SentencePiece `treat_whitespace_as_suffix` (bool).
    pub const TOKENIZER_WS_AS_SUFFIX: &str = "chatglm.tokenizer.treat_whitespace_as_suffix";
    /// Our own: SentencePiece `byte_fallback` (bool).
    pub const TOKENIZER_BYTE_FALLBACK: &str = "chatglm.tokenizer.byte_fallback";
    /// Our own: SentencePiece normalizer name (string: `identity`, `nmt_nfkc`, ...).
    pub const TOKENIZER_NORMALIZER: &str = "chatglm.tokenizer.normalizer";
    /// Our own: what plain SentencePiece decoding prints for the unknown piece (string).
    pub const TOKENIZER_UNK_SURFACE: &str = "chatglm.tokenizer.unk_surface";
    /// Our own: size of the SentencePiece vocabulary; ids from here on are the appended
    /// ChatGLM special tokens and padding (u32).
    pub const TOKENIZER_SP_VOCAB_SIZE: &str = "chatglm.tokenizer.sp_vocab_size";
}

/// Tensor names.
pub mod tensors {
    /// Token embedding, `[vocab, hidden]`.
    pub const TOKEN_EMBD: &str = "token_embd.weight";
    /// Final RMSNorm weight, `[hidden]`.
    pub const OUTPUT_NORM: &str = "output_norm.weight";
    /// Output projection (not tied to the embedding), `[vocab, hidden]`.
    pub const OUTPUT: &str = "output.weight";

    /// Input RMSNorm weight of layer `i`, `[hidden]`.
    pub fn attn_norm(i: usize) -> String {
        format!("blk.{i}.attn_norm.weight")
    }
    /// Fused Q|K|V projection of layer `i`, `[(heads + 2 groups) * head_dim, hidden]`.
    pub fn attn_qkv(i: usize) -> String {
        format!("blk.{i}.attn_qkv.weight")
    }
    /// Fused Q|K|V bias of layer `i`, `[(heads + 2 groups) * head_dim]`.
    pub fn attn_qkv_bias(i: usize) -> String {
        format!("blk.{i}.attn_qkv.bias")
    }
    /// Attention output projection of layer `i`, `[hidden, heads * head_dim]`.
    pub fn attn_output(i: usize) -> String {
        format!("blk.{i}.attn_output.weight")
    }
    /// Post-attention RMSNorm weight of layer `i`, `[hidden]`.
    pub fn ffn_norm(i: usize) -> String {
        format!("blk.{i}.ffn_norm.weight")
    }
    /// Fused gate|up projection of layer `i`, `[2 * ffn, hidden]`, gate rows first.
    pub fn ffn_up(i: usize) -> String {
        format!("blk.{i}.ffn_up.weight")
    }
    /// MLP down projection of layer `i`, `[hidden, ffn]`.
    pub fn ffn_down(i: usize) -> String {
        format!("blk.{i}.ffn_down.weight")
    }
}

/// The ChatGLM2 special tokens, appended in this order after the SentencePiece vocabulary
/// (THUDM `tokenization_chatglm.py`, `SPTokenizer.__init__`).
pub const CHATGLM2_SPECIAL_TOKENS: [&str; 5] = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"];

/// The ChatGLM3 role tokens, appended after [`CHATGLM2_SPECIAL_TOKENS`].
pub const CHATGLM3_ROLE_TOKENS: [&str; 4] =
    ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"];

/// Every ChatGLM3 special token in id order: [`CHATGLM2_SPECIAL_TOKENS`], then
/// [`CHATGLM3_ROLE_TOKENS`].
pub const CHATGLM3_SPECIAL_TOKENS: [&str; 9] = [
    CHATGLM2_SPECIAL_TOKENS[0],
    CHATGLM2_SPECIAL_TOKENS[1],
    CHATGLM2_SPECIAL_TOKENS[2],
    CHATGLM2_SPECIAL_TOKENS[3],
    CHATGLM2_SPECIAL_TOKENS[4],
    CHATGLM3_ROLE_TOKENS[0],
    CHATGLM3_ROLE_TOKENS[1],
    CHATGLM3_ROLE_TOKENS[2],
    CHATGLM3_ROLE_TOKENS[3],
];

/// The prompt format (and special-token set) of a model: the network is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// ChatGLM2: `[Round N]\n\n问：...\n\n答：` prompts; specials `[MASK] [gMASK] [sMASK] sop eop`.
    ChatGlm2,
    /// ChatGLM3: role tokens `<|system|> <|user|> <|assistant|> <|observation|>` after those.
    ChatGlm3,
}

impl Family {
    /// The value stored under [`keys::PROMPT_FORMAT`].
    pub fn name(self) -> &'static str {
        match self {
            Family::ChatGlm2 => "chatglm2",
            Family::ChatGlm3 => "chatglm3",
        }
    }

    /// Parses [`Family::name`]; also accepts `glm2`/`2` and `glm3`/`3`, in any case.
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "chatglm2" | "glm2" | "2" => Some(Family::ChatGlm2),
            "chatglm3" | "glm3" | "3" => Some(Family::ChatGlm3),
            _ => None,
        }
    }

    /// The special tokens appended after the SentencePiece vocabulary, in id order.
    pub fn special_tokens(self) -> &'static [&'static str] {
        match self {
            Family::ChatGlm2 => &CHATGLM2_SPECIAL_TOKENS,
            Family::ChatGlm3 => &CHATGLM3_SPECIAL_TOKENS,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Family, String> {
        Family::from_name(s)
            .ok_or_else(|| format!("unknown model family {s:?} (chatglm2 or chatglm3)"))
    }
}
