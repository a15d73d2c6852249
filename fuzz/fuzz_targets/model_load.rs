//! Fuzz target past the parser: mutated bytes of a tiny model GGUF (seed it with one, see the
//! README) go through the tokenizer and model loading and, when the file is accepted, a
//! session generates two greedy tokens. Every step must return `Ok` or `Err`: no panic, no
//! abort (an allocation sized by the file), no out-of-bounds read.
#![no_main]

use chatglm::gguf::GgufFile;
use chatglm::sampler::SamplerConfig;
use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let Ok(engine) = Engine::from_file("fuzz.gguf".into(), Arc::new(file)) else {
        return;
    };
    let engine = Arc::new(engine);
    // A small cache and one thread: the input, not the machine, is what is explored.
    let options = SessionOptions {
        context: engine.config().context_length.clamp(1, 32),
        threads: 1,
        ..SessionOptions::default()
    };
    let Ok(mut session) = Session::new(Arc::clone(&engine), options) else {
        return;
    };
    let generate = GenerateOptions {
        max_new_tokens: 2,
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
    };
    let _ = session.complete("hello world", &generate, &mut |_| true);
    let _ = session.chat("hi", &generate, &mut |_| true);
    let ids = engine.tokenizer().encode("fuzz 語 \u{1F600}");
    let _ = engine.tokenizer().decode(&ids);
});
