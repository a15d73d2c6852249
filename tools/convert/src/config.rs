//! The Hugging Face `config.json` of ChatGLM2/ChatGLM3 checkpoints, and telling the two
//! families apart.
//!
//! Field names and defaults follow THUDM's `configuration_chatglm.py` (`ChatGLMConfig`) as
//! shipped with `chatglm2-6b` and `chatglm3-6b`. The model's sizes are required (a converter
//! must not guess the shape of a model); the behaviour flags default as in `ChatGLMConfig`, so a
//! config that omits one means what it means to the reference code. Unknown fields are ignored.
//! [`HfConfig::validate`] refuses what the runtime cannot run.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use chatglm::model::{ModelConfig, RopeScaling};
use serde::Deserialize;

/// Largest config file accepted (real ones are about 1.5 KB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Errors reading or checking a config, or deciding the model family.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a ChatGLM2/3 config (invalid JSON, a missing or mistyped field).
    #[error("{path}: {source}")]
    Parse {
        /// The file (`config.json` when parsed from a string).
        path: PathBuf,
        /// The JSON error; it names the field.
        #[source]
        source: serde_json::Error,
    },

    /// A field whose value the runtime cannot run.
    #[error("config.json: {field} = {value} is not supported: {reason}")]
    Unsupported {
        /// The field name as in `config.json`.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be run.
        reason: String,
    },

    /// A model of another family (ChatGLM-6B v1) that the runtime does not support.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),

    /// Nothing in the checkpoint directory tells ChatGLM2 from ChatGLM3 (or CodeGeeX2, GLM-4).
    #[error(
        "cannot tell whether {0} is a ChatGLM2 or a ChatGLM3 checkpoint (no \
         tokenization_chatglm.py, no role tokens in tokenizer_config.json, no family in the \
         model name): say which"
    )]
    UnknownFamily(PathBuf),
}

/// `eos_token_id`: one id or a list of ids.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_epsilon() -> f64 {
    1e-5
}

/// A ChatGLM2/ChatGLM3 `config.json`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HfConfig {
    /// `"chatglm"` for every ChatGLM generation.
    #[serde(default)]
    pub model_type: Option<String>,
    /// e.g. `["ChatGLMModel"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `_name_or_path`, e.g. `"THUDM/chatglm3-6b"`.
    #[serde(default, rename = "_name_or_path")]
    pub name_or_path: Option<String>,

    /// Width of the residual stream (4096 for the 6B models).
    pub hidden_size: usize,
    /// Number of transformer layers (28).
    pub num_layers: usize,
    /// Number of query heads (32).
    pub num_attention_heads: usize,
    /// Dimension of one attention head (128).
    pub kv_channels: usize,
    /// Whether K and V have fewer heads than Q (multi-query / grouped attention; true).
    #[serde(default)]
    pub multi_query_attention: bool,
    /// Number of K/V heads (groups) under multi-query attention (2).
    pub multi_query_group_num: usize,
    /// Width of the MLP's hidden layer (13696); `dense_h_to_4h` has twice as many rows.
    pub ffn_hidden_size: usize,
    /// Rows of the embedding and output matrices (65024).
    pub padded_vocab_size: usize,
    /// Context length the model was trained for (chatglm2-6b 32768, chatglm3-6b 8192).
    pub seq_length: usize,
    /// Epsilon of the RMSNorms (1e-5).
    #[serde(default = "default_epsilon")]
    pub layernorm_epsilon: f64,
    /// RMSNorm (true) or LayerNorm (false).
    #[serde(default = "yes")]
    pub rmsnorm: bool,
    /// Whether the residual is taken after the layer norm (false).
    #[serde(default)]
    pub apply_residual_connection_post_layernorm: bool,
    /// Whether a final norm follows the last layer (true).
    #[serde(default = "yes")]
    pub post_layer_norm: bool,
    /// Biases on the dense and MLP projections (false).
    #[serde(default)]
    pub add_bias_linear: bool,
    /// A bias on the fused query/key/value projection (true for ChatGLM2/3).
    #[serde(default)]
    pub add_qkv_bias: bool,
    /// A training-time fusion flag; no effect on inference.
    #[serde(default = "yes")]
    pub bias_dropout_fusion: bool,
    /// ChatGLM2's RoPE on the first half of each head, interleaved pairs (true).
    #[serde(default = "yes")]
    pub original_rope: bool,
    /// RoPE scaling of the long-context variants (chatglm2-6b-32k: 16, chatglm3-6b-32k: 50);
    /// absent in most configs, meaning 1.
    #[serde(default)]
    pub rope_ratio: Option<f64>,
    /// Scales attention scores by layer number in fp16 training; no effect on the maths.
    #[serde(default = "yes")]
    pub apply_query_key_layer_scaling: bool,
    /// Softmax in fp32 (the runtime always does).
    #[serde(default = "yes")]
    pub attention_softmax_in_fp32: bool,
    /// Residual stream kept in fp32 (the runtime always does).
    #[serde(default)]
    pub fp32_residual_connection: bool,
    /// Dropout probabilities; ignored at inference.
    #[serde(default)]
    pub hidden_dropout: f64,
    /// Dropout probability of attention; ignored at inference.
    #[serde(default)]
    pub attention_dropout: f64,
    /// How the weights are stored (`"float16"`, `"float32"`, `"bfloat16"`); informational, the
    /// checkpoint reader sees the real dtype of every tensor.
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Whether the output layer shares the embedding matrix (false for ChatGLM2/3).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Set (4 or 8) in THUDM's pre-quantized checkpoints (`chatglm2-6b-int4`), whose weights
    /// are packed integers the converter cannot read.
    #[serde(default)]
    pub quantization_bit: Option<u32>,
    /// P-tuning v2 prefix length (a prefix encoder the runtime does not have).
    #[serde(default)]
    pub pre_seq_len: Option<usize>,
    /// `transformers` version that wrote the file.
    #[serde(default)]
    pub transformers_version: Option<String>,
}

/// Fields of the first-generation ChatGLM-6B config that ChatGLM2/3 do not have.
pub(crate) const V1_FIELDS: [&str; 3] = [
    "position_encoding_2d",
    "inner_hidden_size",
    "max_sequence_length",
];

impl HfConfig {
    /// Reads and parses `config.json` (does not [`validate`](Self::validate) it).
    pub fn from_file(path: &Path) -> Result<HfConfig, ConfigError> {
        Self::parse(&read_config_text(path)?, path)
    }
}

/// The text of the `config.json` at `path`, refused if larger than [`MAX_CONFIG_BYTES`].
fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    fs::File::open(path)
        .map_err(io)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_BYTES} bytes: not a config.json"),
        )));
    }
    Ok(text)
}

/// A `config.json` of either generation.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyConfig {
    /// ChatGLM2 or ChatGLM3 (the prompt format is decided by [`family`]).
    ChatGlm(HfConfig),
    /// ChatGLM-6B (v1), [`crate::config_glm1`].
    ChatGlm1(crate::config_glm1::Glm1Config),
}

impl AnyConfig {
    /// Reads the `config.json` at `path`, of whichever generation it is.
    pub fn from_file(path: &Path) -> Result<AnyConfig, ConfigError> {
        let text = read_config_text(path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if crate::config_glm1::Glm1Config::is_v1(&value) {
            crate::config_glm1::Glm1Config::parse(&text, path).map(AnyConfig::ChatGlm1)
        } else {
            HfConfig::parse(&text, path).map(AnyConfig::ChatGlm)
        }
    }
}

impl HfConfig {
    /// Parses the text of a `config.json` (does not [`validate`](Self::validate) it).
    pub fn from_json(text: &str) -> Result<HfConfig, ConfigError> {
        Self::parse(text, Path::new("config.json"))
    }

    fn parse(text: &str, path: &Path) -> Result<HfConfig, ConfigError> {
        let parse_err = |source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(parse_err)?;
        if let Some(field) = V1_FIELDS.iter().find(|f| value.get(**f).is_some()) {
            return Err(ConfigError::UnsupportedModel(format!(
                "{} has `{field}`: a first-generation ChatGLM-6B config; only ChatGLM2 and \
                 ChatGLM3 are supported",
                path.display()
            )));
        }
        // From the text rather than the value, so that errors carry a line and column.
        serde_json::from_str(text).map_err(parse_err)
    }

    /// Checks that the runtime can run this model; the error names the first field that it
    /// cannot, and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn unsupported(
            field: &'static str,
            value: impl fmt::Display,
            reason: impl Into<String>,
        ) -> Result<(), ConfigError> {
            Err(ConfigError::Unsupported {
                field,
                value: value.to_string(),
                reason: reason.into(),
            })
        }
        if let Some(t) = &self.model_type {
            if t != "chatglm" {
                return unsupported("model_type", t, "not a ChatGLM model");
            }
        }
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_channels", self.kv_channels),
            ("multi_query_group_num", self.multi_query_group_num),
            ("ffn_hidden_size", self.ffn_hidden_size),
            ("padded_vocab_size", self.padded_vocab_size),
            ("seq_length", self.seq_length),
        ];
        for (field, size) in sizes {
            if size == 0 {
                return unsupported(field, 0, "must be positive");
            }
        }
        let flags: [(&'static str, bool, bool, &str); 7] = [
            (
                "multi_query_attention",
                self.multi_query_attention,
                true,
                "the runtime implements multi-query (grouped) attention only",
            ),
            (
                "add_bias_linear",
                self.add_bias_linear,
                false,
                "the runtime has no biases on the dense and MLP projections",
            ),
            (
                "add_qkv_bias",
                self.add_qkv_bias,
                true,
                "the runtime expects a query_key_value bias",
            ),
            (
                "rmsnorm",
                self.rmsnorm,
                true,
                "the runtime implements RMSNorm, not LayerNorm",
            ),
            (
                "apply_residual_connection_post_layernorm",
                self.apply_residual_connection_post_layernorm,
                false,
                "the runtime takes the residual before the layer norm",
            ),
            (
                "post_layer_norm",
                self.post_layer_norm,
                true,
                "the runtime always applies a final RMSNorm",
            ),
            (
                "original_rope",
                self.original_rope,
                true,
                "the runtime implements ChatGLM2's rotary embedding only",
            ),
        ];
        for (field, value, wanted, reason) in flags {
            if value != wanted {
                return unsupported(field, value, reason);
            }
        }
        if !self.kv_channels.is_multiple_of(4) {
            return unsupported(
                "kv_channels",
                self.kv_channels,
                "RoPE rotates the first kv_channels/2 dimensions in pairs, so kv_channels must \
                 be a multiple of 4",
            );
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.multi_query_group_num)
        {
            return unsupported(
                "multi_query_group_num",
                self.multi_query_group_num,
                format!(
                    "num_attention_heads ({}) must be a multiple of the number of groups",
                    self.num_attention_heads
                ),
            );
        }
        if !(self.layernorm_epsilon.is_finite() && self.layernorm_epsilon > 0.0) {
            return unsupported(
                "layernorm_epsilon",
                self.layernorm_epsilon,
                "must be a positive number",
            );
        }
        if let Some(r) = self.rope_ratio {
            if !(r.is_finite() && r > 0.0) {
                return unsupported("rope_ratio", r, "must be a positive number");
            }
        }
        if let Some(bits) = self.quantization_bit.filter(|&b| b != 0) {
            return unsupported(
                "quantization_bit",
                bits,
                "the weights are pre-quantized by THUDM's code; convert the float checkpoint",
            );
        }
        if let Some(n) = self.pre_seq_len.filter(|&n| n != 0) {
            return unsupported("pre_seq_len", n, "P-tuning v2 prefixes are not supported");
        }
        if self.tie_word_embeddings == Some(true) {
            return unsupported(
                "tie_word_embeddings",
                true,
                "ChatGLM2/3 have a separate output layer",
            );
        }
        // Every tensor size must fit in memory arithmetic.
        let products = [
            (
                "padded_vocab_size",
                self.padded_vocab_size,
                self.hidden_size,
            ),
            (
                "ffn_hidden_size",
                self.ffn_hidden_size.saturating_mul(2),
                self.hidden_size,
            ),
            (
                "num_attention_heads",
                self.qkv_rows_checked(),
                self.hidden_size,
            ),
        ];
        for (field, rows, cols) in products {
            // Elements of a tensor, which must be addressable as f32.
            if !matches!(rows.checked_mul(cols), Some(n) if n <= isize::MAX as usize / 4) {
                return unsupported(field, rows, "tensor sizes overflow");
            }
        }
        Ok(())
    }

    fn qkv_rows_checked(&self) -> usize {
        self.multi_query_group_num
            .checked_mul(2)
            .and_then(|g| g.checked_add(self.num_attention_heads))
            .and_then(|h| h.checked_mul(self.kv_channels))
            .unwrap_or(usize::MAX)
    }

    /// Dimension of one head (`kv_channels`).
    pub fn head_dim(&self) -> usize {
        self.kv_channels
    }

    /// Number of K/V heads (`multi_query_group_num`).
    pub fn num_kv_heads(&self) -> usize {
        self.multi_query_group_num
    }

    /// Rows of the fused `query_key_value` weight: `(heads + 2 * groups) * kv_channels`
    /// (call on a validated config: the sizes are then known not to overflow).
    pub fn qkv_rows(&self) -> usize {
        (self.num_attention_heads + 2 * self.multi_query_group_num) * self.kv_channels
    }

    /// Dimensions of each head that RoPE rotates (`kv_channels / 2`).
    pub fn rope_dim(&self) -> usize {
        self.kv_channels / 2
    }

    /// `rope_ratio`, 1 when absent.
    pub fn rope_ratio(&self) -> f64 {
        self.rope_ratio.unwrap_or(1.0)
    }
}

pub use chatglm::arch::Family;

impl HfConfig {
    /// The runtime's configuration of a validated checkpoint of `family`. `rope_ratio` is
    /// applied as each generation's code applies it: ChatGLM2 (the 32k variant) divides the
    /// positions by it (CodeGeeX2 is ChatGLM2), ChatGLM3 and GLM-4 multiply the RoPE base by
    /// it (glm-4-9b-chat: 500, base 5e6; glm-4-9b-chat-1m: 10000, base 1e8).
    pub fn to_model_config(&self, family: Family) -> ModelConfig {
        let rope_scaling = match (self.rope_ratio.map(|r| r as f32), family) {
            (None, _) => RopeScaling::None,
            (Some(1.0), _) => RopeScaling::None,
            (Some(r), Family::ChatGlm2 | Family::CodeGeeX2) => RopeScaling::DividePositions(r),
            // GLM-4's `RotaryEmbedding.forward_impl`: `base = base * self.rope_ratio`.
            (Some(r), Family::ChatGlm3 | Family::Glm4 | Family::ChatGlm1) => {
                RopeScaling::MultiplyBase(r)
            }
        };
        ModelConfig {
            vocab_size: self.padded_vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            num_heads: self.num_attention_heads,
            num_kv_groups: self.multi_query_group_num,
            head_dim: self.kv_channels,
            ffn_hidden_size: self.ffn_hidden_size,
            context_length: self.seq_length,
            rms_eps: self.layernorm_epsilon as f32,
            rope_base: 10000.0,
            rope_scaling,
            block: chatglm::model::Block::Glm2,
        }
    }
}

/// The family of a checkpoint and the evidence that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyDecision {
    /// The family.
    pub family: Family,
    /// What decided it, for the converter to print (e.g. `"tokenization_chatglm.py defines
    /// the role tokens"`).
    pub evidence: String,
}

/// The ChatGLM3 role tokens.
const ROLE_TOKENS: [&str; 4] = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"];

/// Whether `tokenizer.model` is GLM-4's tiktoken text (`base64 rank` lines) rather than a
/// serialized SentencePiece `ModelProto` (whose first byte is a protobuf tag, never a base64
/// character followed by `" 0\n"`).
fn tokenizer_model_is_tiktoken(dir: &Path) -> Result<bool, ConfigError> {
    let path = dir.join("tokenizer.model");
    let mut head = Vec::new();
    match fs::File::open(&path) {
        Ok(f) => f
            .take(256)
            .read_to_end(&mut head)
            .map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(ConfigError::Io { path, source }),
    };
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return Ok(false);
    };
    let (b64, rank) = (&line[..space], &line[space + 1..]);
    Ok(!b64.is_empty()
        && b64
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        && rank == b"0")
}

/// Decides the family of the checkpoint in `dir`: ChatGLM2, ChatGLM3, CodeGeeX2 or GLM-4.
///
/// `config.json` is the same for ChatGLM2, ChatGLM3 and CodeGeeX2 (and GLM-4 differs only in
/// sizes and `rope_ratio`); what differs is the tokenizer (GLM-4: tiktoken; ChatGLM3 adds the
/// four role tokens after the five ChatGLM2 special tokens) and the name (CodeGeeX2 ships
/// ChatGLM2's code and files under its own name). Signals, strongest first; the first that
/// decides wins:
///
/// 1. `override_family`, when the caller knows.
/// 2. GLM-4's tokenizer: a tiktoken `tokenizer.model`, `tokenization_chatglm.py` importing
///    tiktoken, or a `ChatGLM4Tokenizer` class in `tokenizer_config.json`.
/// 3. The model's name saying `codegeex` (`_name_or_path` of `config.json`, `name_or_path` of
///    `tokenizer_config.json`, the directory name): CodeGeeX2's files are otherwise ChatGLM2's
///    (CodeGeeX4, GLM-4-based, has stopped at 2).
/// 4. `tokenization_chatglm.py` (the code Hugging Face runs to build the tokenizer): it
///    defines the role tokens in ChatGLM3 only.
/// 5. `tokenizer_config.json`: role tokens in `added_tokens_decoder` or `chat_template`
///    (newer ChatGLM3 revisions) mean ChatGLM3.
/// 6. `modeling_chatglm.py`: ChatGLM3's `chat()` calls `build_chat_input`, ChatGLM2's
///    `build_prompt`/`build_inputs`.
/// 7. The model's name containing `glm3` or `glm2` (only one of them).
///
/// When nothing decides, the error asks the caller to say which.
pub fn family(
    dir: &Path,
    config: &HfConfig,
    override_family: Option<Family>,
) -> Result<FamilyDecision, ConfigError> {
    let decided = |family, evidence: String| Ok(FamilyDecision { family, evidence });
    if let Some(family) = override_family {
        return decided(family, "given by the caller".to_owned());
    }

    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config: Option<serde_json::Value> = match read_text(&tokenizer_config_path)? {
        Some(text) => Some(
            serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
                path: tokenizer_config_path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let dir_name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let names = [
        ("config.json _name_or_path", config.name_or_path.clone()),
        (
            "tokenizer_config.json name_or_path",
            tokenizer_config
                .as_ref()
                .and_then(|tc| tc.get("name_or_path"))
                .and_then(|n| n.as_str())
                .map(str::to_owned),
        ),
        ("directory name", dir_name),
    ];
    if tokenizer_model_is_tiktoken(dir)? {
        return decided(
            Family::Glm4,
            "tokenizer.model is a tiktoken rank file".to_owned(),
        );
    }
    let tokenization_code = read_text(&dir.join("tokenization_chatglm.py"))?;
    if tokenization_code
        .as_ref()
        .is_some_and(|code| code.contains("tiktoken"))
    {
        return decided(
            Family::Glm4,
            "tokenization_chatglm.py uses tiktoken".to_owned(),
        );
    }
    if let Some(class) = tokenizer_config
        .as_ref()
        .and_then(|tc| tc.get("tokenizer_class"))
        .and_then(|c| c.as_str())
        .filter(|c| c.contains("ChatGLM4"))
    {
        return decided(
            Family::Glm4,
            format!("tokenizer_config.json has tokenizer_class {class}"),
        );
    }

    for (what, name) in &names {
        if let Some(name) = name
            .as_ref()
            .filter(|n| n.to_ascii_lowercase().contains("codegeex"))
        {
            return decided(Family::CodeGeeX2, format!("{what} {name:?}"));
        }
    }

    if let Some(code) = tokenization_code {
        let family = if ROLE_TOKENS.iter().any(|t| code.contains(t)) {
            Family::ChatGlm3
        } else {
            Family::ChatGlm2
        };
        let how = if family == Family::ChatGlm3 {
            "defines"
        } else {
            "does not define"
        };
        return decided(
            family,
            format!("tokenization_chatglm.py {how} the role tokens"),
        );
    }

    if let Some(tc) = &tokenizer_config {
        let mentions_roles = |v: Option<&serde_json::Value>| {
            v.is_some_and(|v| {
                let text = v.to_string();
                ROLE_TOKENS.iter().any(|t| text.contains(t))
            })
        };
        if mentions_roles(tc.get("added_tokens_decoder"))
            || mentions_roles(tc.get("chat_template"))
            || mentions_roles(tc.get("additional_special_tokens"))
        {
            return decided(
                Family::ChatGlm3,
                "tokenizer_config.json lists the role tokens".to_owned(),
            );
        }
    }

    if let Some(code) = read_text(&dir.join("modeling_chatglm.py"))? {
        if code.contains("build_chat_input") {
            return decided(
                Family::ChatGlm3,
                "modeling_chatglm.py builds chats with build_chat_input".to_owned(),
            );
        }
        if code.contains("build_prompt") || code.contains("build_inputs") {
            return decided(
                Family::ChatGlm2,
                "modeling_chatglm.py builds chats with build_prompt".to_owned(),
            );
        }
    }

    for (what, name) in names {
        let Some(name) = name else { continue };
        let lower = name.to_ascii_lowercase();
        match (lower.contains("glm2"), lower.contains("glm3")) {
            (true, false) => return decided(Family::ChatGlm2, format!("{what} {name:?}")),
            (false, true) => return decided(Family::ChatGlm3, format!("{what} {name:?}")),
            _ => {}
        }
    }
    Err(ConfigError::UnknownFamily(dir.to_path_buf()))
}

/// The text of `path` (lossy UTF-8, at most 16 MiB), or `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, ConfigError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(16 << 20)
        .read_to_end(&mut bytes)
        .map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}
