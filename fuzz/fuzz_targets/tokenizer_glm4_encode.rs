//! Fuzz target: GLM-4's byte-level tokenizer on arbitrary text. Encoding must not panic; plain
//! BPE (special strings as text) decodes back to the text exactly (every byte is a token);
//! with special-token splitting, the ids decode (specials skipped) to the text less the special
//! strings; streaming decoding equals batch decoding in both modes. The first input byte
//! decides whether the text is repeated (long pieces, long whitespace runs from short inputs).
#![no_main]

use std::sync::OnceLock;

use chatglm::tokenizer::{DecodeMode, Tokenizer};
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_tiktoken_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/golden-glm4/tokenizer.model"
        ))
        .expect("toy tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let text = if mode & 1 != 0 && !text.is_empty() {
        text.repeat(3000 / text.len() + 1)
    } else {
        text.into_owned()
    };
    let tok = tokenizer();
    let plain = tok.encode_ordinary(&text);
    assert!(plain.iter().all(|&id| (id as usize) < tok.sp_vocab_size()));
    assert_eq!(tok.decode(&plain).expect("ordinary ids"), text, "round trip");
    let ids = tok.encode_with_prefix(&text);
    for mode in [DecodeMode::SkipSpecial, DecodeMode::RenderSpecial] {
        let decoded = tok.decode_with(&ids, mode).expect("ids from encode decode");
        let mut stream = tok.stream_decoder(mode);
        let mut chunks = String::new();
        for &id in &ids {
            chunks.push_str(&stream.push(tok, id).expect("known id"));
        }
        chunks.push_str(&stream.finish());
        assert_eq!(chunks, decoded, "streaming equals batch decoding");
    }
});
