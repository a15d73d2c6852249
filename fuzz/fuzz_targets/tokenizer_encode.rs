//! Fuzz target: the SentencePiece tokenizer on arbitrary text. Encoding any text must not
//! panic and must produce SentencePiece ids only; with the identity toy model (identity
//! normalization, dummy prefix, whitespace kept, byte fallback) decoding gives the text back
//! whenever it has no U+2581 (which decodes to a space); streaming decoding always equals batch
//! decoding. The first input byte picks the model and whether the text is repeated (so that
//! long segments, which take another merge queue, are reached from short inputs).
#![no_main]

use std::sync::OnceLock;

use chatglm::tokenizer::{DecodeMode, Family, Tokenizer};
use libfuzzer_sys::fuzz_target;

const IDENTITY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/golden/tokenizer_identity.model"
));
const NFKC: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/golden/tokenizer_nfkc.model"
));

fn tokenizers() -> &'static [Tokenizer; 2] {
    static T: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    T.get_or_init(|| {
        let load = |bytes: &[u8]| {
            let model = chatglm::tokenizer::SpmModel::parse(bytes).expect("toy model");
            Tokenizer::from_spm(model, Family::ChatGlm3).expect("toy tokenizer")
        };
        [load(IDENTITY), load(NFKC)]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let text = if mode & 2 != 0 && !text.is_empty() {
        text.repeat(300 / text.len() + 1)
    } else {
        text.into_owned()
    };
    let tok = &tokenizers()[usize::from(mode & 1)];
    let ids = tok.encode(&text);
    assert!(ids.iter().all(|&id| (id as usize) < tok.sp_vocab_size()));
    let decoded = tok.decode(&ids).expect("ids from encode decode");
    if mode & 1 == 0 && !text.contains('\u{2581}') {
        assert_eq!(decoded, text, "identity round trip");
    }
    let mut stream = tok.stream_decoder(DecodeMode::SkipSpecial);
    let mut chunks = String::new();
    for &id in &ids {
        chunks.push_str(&stream.push(tok, id).expect("known id"));
    }
    chunks.push_str(&stream.finish());
    assert_eq!(chunks, decoded, "streaming equals batch decoding");
});
