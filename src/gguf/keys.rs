//! Every GGUF metadata key and tensor name the runtime reads and `gguf-tools` writes, spelled
//! once. Keys follow llama.cpp's layout (its `gguf-py/gguf/constants.py`); `llava_edge.*` are
//! ours, for what that layout does not say, and documented here.

/// `general.*`: the file as a whole.
pub mod general {
    /// Model family: `llama`, `qwen2`, ... for a text model, `clip` for an mmproj.
    pub const ARCHITECTURE: &str = "general.architecture";
    /// Human-readable model name.
    pub const NAME: &str = "general.name";
    /// Data alignment in bytes (a power of two).
    pub const ALIGNMENT: &str = "general.alignment";
    /// llama.cpp's `llama_ftype` of the file's weights.
    pub const FILE_TYPE: &str = "general.file_type";
    /// Version of the quantized block layouts.
    pub const QUANTIZATION_VERSION: &str = "general.quantization_version";
}

/// `{arch}.*`: the text model's hyperparameters, under its architecture's name.
pub mod llm {
    /// The full key for `suffix` under architecture `arch` (`llama.block_count`).
    pub fn key(arch: &str, suffix: &str) -> String {
        format!("{arch}.{suffix}")
    }
    /// Trained context length.
    pub const CONTEXT_LENGTH: &str = "context_length";
    /// Hidden size.
    pub const EMBEDDING_LENGTH: &str = "embedding_length";
    /// Decoder blocks (`blk.N`).
    pub const BLOCK_COUNT: &str = "block_count";
    /// Feed-forward inner size.
    pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
    /// Query heads.
    pub const HEAD_COUNT: &str = "attention.head_count";
    /// Key/value heads.
    pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
    /// Per-head key size (absent: hidden size / heads).
    pub const KEY_LENGTH: &str = "attention.key_length";
    /// Per-head value size (absent: the key size).
    pub const VALUE_LENGTH: &str = "attention.value_length";
    /// RMSNorm epsilon.
    pub const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
    /// RoPE base frequency.
    pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
    /// Dimensions of a head that rotate.
    pub const ROPE_DIMENSION_COUNT: &str = "rope.dimension_count";
    /// Rows of the token embedding.
    pub const VOCAB_SIZE: &str = "vocab_size";
}

/// `clip.*`: an mmproj (vision encoder and projector) file.
pub mod clip {
    /// The value of `general.architecture` in an mmproj.
    pub const ARCH: &str = "clip";
    /// Whether the file holds a vision tower.
    pub const HAS_VISION_ENCODER: &str = "clip.has_vision_encoder";
    /// Whether the file holds a text tower.
    pub const HAS_TEXT_ENCODER: &str = "clip.has_text_encoder";
    /// `mlp` or `linear`.
    pub const PROJECTOR_TYPE: &str = "clip.projector_type";
    /// GELU (true) or quick GELU (false) in the encoder's MLP, where our activation key is absent.
    pub const USE_GELU: &str = "clip.use_gelu";
    /// Tile side in pixels.
    pub const IMAGE_SIZE: &str = "clip.vision.image_size";
    /// Patch side in pixels.
    pub const PATCH_SIZE: &str = "clip.vision.patch_size";
    /// Encoder width.
    pub const EMBEDDING_LENGTH: &str = "clip.vision.embedding_length";
    /// Encoder MLP inner size.
    pub const FEED_FORWARD_LENGTH: &str = "clip.vision.feed_forward_length";
    /// Encoder blocks stored (`v.blk.N`).
    pub const BLOCK_COUNT: &str = "clip.vision.block_count";
    /// Attention heads.
    pub const HEAD_COUNT: &str = "clip.vision.attention.head_count";
    /// LayerNorm epsilon.
    pub const LAYER_NORM_EPS: &str = "clip.vision.attention.layer_norm_epsilon";
    /// The projector's output width.
    pub const PROJECTION_DIM: &str = "clip.vision.projection_dim";
    /// Per-channel normalisation mean.
    pub const IMAGE_MEAN: &str = "clip.vision.image_mean";
    /// Per-channel normalisation std.
    pub const IMAGE_STD: &str = "clip.vision.image_std";
    /// Anyres resolutions, flattened (height, width) pairs.
    pub const IMAGE_GRID_PINPOINTS: &str = "clip.vision.image_grid_pinpoints";
    /// `spatial_unpad` for anyres models.
    pub const MM_PATCH_MERGE_TYPE: &str = "clip.vision.mm_patch_merge_type";
}

/// `tokenizer.*`, spelled as llama.cpp's converter writes them (`seperator` included).
pub mod tokenizer {
    /// Tokenizer family: `llama` (SentencePiece) or `gpt2` (byte-level BPE).
    pub const MODEL: &str = "tokenizer.ggml.model";
    /// Pre-tokenizer name for BPE vocabularies.
    pub const PRE: &str = "tokenizer.ggml.pre";
    /// Token texts, raw bytes.
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    /// SentencePiece scores (merge priority).
    pub const SCORES: &str = "tokenizer.ggml.scores";
    /// Token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    /// BPE merges as `"left right"` strings, in rank order.
    pub const MERGES: &str = "tokenizer.ggml.merges";
    /// The special-token id key for `name` (`bos` -> `tokenizer.ggml.bos_token_id`).
    pub fn token_id(name: &str) -> String {
        format!("tokenizer.ggml.{name}_token_id")
    }
    /// Beginning-of-sequence id.
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    /// End-of-sequence id.
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    /// End-of-turn id.
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    /// End-of-message id.
    pub const EOM_ID: &str = "tokenizer.ggml.eom_token_id";
    /// Unknown-token id.
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    /// Separator id (the misspelling is the format's).
    pub const SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
    /// Padding id.
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    /// Mask id.
    pub const MASK_ID: &str = "tokenizer.ggml.mask_token_id";
    /// Fill-in-the-middle prefix id.
    pub const FIM_PRE_ID: &str = "tokenizer.ggml.fim_pre_token_id";
    /// Fill-in-the-middle suffix id.
    pub const FIM_SUF_ID: &str = "tokenizer.ggml.fim_suf_token_id";
    /// Fill-in-the-middle middle id.
    pub const FIM_MID_ID: &str = "tokenizer.ggml.fim_mid_token_id";
    /// Fill-in-the-middle padding id.
    pub const FIM_PAD_ID: &str = "tokenizer.ggml.fim_pad_token_id";
    /// Fill-in-the-middle repository id.
    pub const FIM_REP_ID: &str = "tokenizer.ggml.fim_rep_token_id";
    /// Fill-in-the-middle file-separator id.
    pub const FIM_SEP_ID: &str = "tokenizer.ggml.fim_sep_token_id";
    /// Deprecated spelling of the FIM prefix id.
    pub const PREFIX_ID: &str = "tokenizer.ggml.prefix_token_id";
    /// Deprecated spelling of the FIM suffix id.
    pub const SUFFIX_ID: &str = "tokenizer.ggml.suffix_token_id";
    /// Deprecated spelling of the FIM middle id.
    pub const MIDDLE_ID: &str = "tokenizer.ggml.middle_token_id";
    /// Whether encoding with `add_special` prepends BOS.
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    /// Whether encoding with `add_special` appends EOS.
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    /// Whether SentencePiece text gets a leading space.
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    /// The model's Jinja chat template.
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// `llava_edge.*`: our mmproj keys for what llama.cpp's layout does not say; files without them
/// get llama.cpp's conventions.
pub mod llava_edge {
    /// Hidden-state index the features are taken from, counted as transformers counts
    /// `hidden_states` (0 = embeddings, k = output of layer k; negative from the end).
    pub const FEATURE_LAYER: &str = "llava_edge.vision.feature_layer";
    /// `default` (drop the class token) or `full`.
    pub const SELECT_STRATEGY: &str = "llava_edge.vision.select_strategy";
    /// `quick_gelu`, `gelu_pytorch_tanh` or `gelu`.
    pub const ACTIVATION: &str = "llava_edge.vision.activation";
    /// Encoder layers of the original model (llama.cpp's files may store fewer).
    pub const N_LAYER_ORIG: &str = "llava_edge.vision.original_block_count";
    /// OneVision's `anyres_max_N`: N.
    pub const ANYRES_MAX: &str = "llava_edge.vision.anyres_max_tiles";
}

/// Tensor names in llama.cpp's layout.
pub mod tensors {
    /// Prefix of the text model's decoder blocks.
    pub const BLK_PREFIX: &str = "blk.";
    /// Prefix of the vision encoder's blocks.
    pub const V_BLK_PREFIX: &str = "v.blk.";
    /// The text decoder block `i`'s tensor `name` (`blk(3, "attn_q.weight")`).
    pub fn blk(i: usize, name: &str) -> String {
        format!("{BLK_PREFIX}{i}.{name}")
    }
    /// The vision encoder block `i`'s tensor `name` (`v_blk(0, "ln1.weight")`).
    pub fn v_blk(i: usize, name: &str) -> String {
        format!("{V_BLK_PREFIX}{i}.{name}")
    }
    /// Token embedding, `[n_embd, n_vocab]` in ggml order.
    pub const TOKEN_EMBD: &str = "token_embd.weight";
    /// Final norm.
    pub const OUTPUT_NORM: &str = "output_norm.weight";
    /// Output head (absent when tied to the embedding).
    pub const OUTPUT: &str = "output.weight";
    /// Patch embedding convolution.
    pub const V_PATCH_EMBD: &str = "v.patch_embd.weight";
    /// Its bias (SigLIP).
    pub const V_PATCH_EMBD_BIAS: &str = "v.patch_embd.bias";
    /// CLIP's class embedding.
    pub const V_CLASS_EMBD: &str = "v.class_embd";
    /// Position embedding.
    pub const V_POSITION_EMBD: &str = "v.position_embd.weight";
    /// Pre-encoder LayerNorm (CLIP), `.weight` / `.bias`.
    pub const V_PRE_LN: &str = "v.pre_ln";
    /// Post-encoder LayerNorm, `.weight` / `.bias`.
    pub const V_POST_LN: &str = "v.post_ln";
    /// Projector linear layer `i` (`mm.0`, `mm.2`), `.weight` / `.bias`.
    pub fn mm(i: usize) -> String {
        format!("mm.{i}")
    }
    /// Anyres models' row-end embedding.
    pub const IMAGE_NEWLINE: &str = "model.image_newline";
    /// The same, as some converters name it.
    pub const V_IMAGE_NEWLINE: &str = "v.image_newline";
}
