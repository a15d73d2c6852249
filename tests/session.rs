//! Sessions: history kept on success and untouched on failure, cache reuse, resets.

use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{NoProgress, WriteOptions};
use chatglm::tokenizer::{ChatMessage, Role};
use chatglm::{Engine, Error, GenerateOptions, Session, SessionOptions};
use chatglm_kernels::GgmlType;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn engine(name: &str) -> Arc<Engine> {
    let out = std::env::temp_dir().join(format!(
        "chatglm-session-{}-{name}.gguf",
        std::process::id()
    ));
    let opts = WriteOptions {
        output: out.clone(),
        matrix_type: GgmlType::Q8_0,
        portable: true,
        threads: 2,
        name: "tiny".into(),
    };
    write_synthetic(
        Preset::Tiny,
        9,
        &opts,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    Arc::new(Engine::open(&out).unwrap())
}

fn greedy(n: usize) -> GenerateOptions {
    let mut o = GenerateOptions {
        max_new_tokens: n,
        ..GenerateOptions::default()
    };
    o.sampler.temperature = 0.0;
    o
}

#[test]
fn history_grows_on_success_and_is_untouched_on_failure() {
    let engine = engine("history");
    let mut s = Session::new(
        Arc::clone(&engine),
        SessionOptions {
            context: 128,
            ..SessionOptions::default()
        },
    )
    .unwrap();
    let g = s.chat("hello", &greedy(4), &mut |_| true).unwrap();
    assert_eq!(s.history().len(), 2);
    assert_eq!(s.history()[0].content, "hello");
    assert_eq!(s.history()[1].content, g.text.trim());
    let before = s.history().to_vec();

    // A message that cannot fit even alone.
    let long = "word ".repeat(200);
    assert!(matches!(
        s.chat(&long, &greedy(4), &mut |_| true),
        Err(Error::PromptTooLong { .. })
    ));
    assert_eq!(s.history(), before.as_slice());

    // A conversation ChatGLM2 cannot encode (a system message).
    let conv = [
        ChatMessage::new(Role::System, "be brief"),
        ChatMessage::new(Role::User, "hi"),
    ];
    assert!(s.respond(&conv, &greedy(4), &mut |_| true).is_err());
    assert_eq!(s.history(), before.as_slice());
    assert!(s.set_history(conv.to_vec()).is_err());
    assert_eq!(s.history(), before.as_slice());

    // Continuing works, and reuses the cached prompt of the first round.
    let g2 = s.chat("again", &greedy(4), &mut |_| true).unwrap();
    assert!(g2.timings.reused_tokens > 0, "{:?}", g2.timings);
    assert_eq!(s.history().len(), 4, "{:?}", s.history());
    s.reset();
    assert!(s.history().is_empty());
}

#[test]
fn a_long_conversation_drops_its_oldest_rounds() {
    let engine = engine("long");
    let mut s = Session::new(
        Arc::clone(&engine),
        SessionOptions {
            context: 96,
            ..SessionOptions::default()
        },
    )
    .unwrap();
    for i in 0..12 {
        s.chat(&format!("message number {i}"), &greedy(6), &mut |_| true)
            .unwrap();
    }
    let h = s.history();
    assert!(
        h.len() < 24,
        "old rounds were dropped: {} messages",
        h.len()
    );
    assert_eq!(h[h.len() - 2].content, "message number 11");
    assert_eq!(h[0].role, Role::User);
}

#[test]
fn stopping_from_the_callback_and_streaming_equals_the_text() {
    let engine = engine("stop");
    let mut s = Session::new(engine, SessionOptions::default()).unwrap();
    let mut pieces = Vec::new();
    let g = s
        .complete("once upon a time", &greedy(30), &mut |p| {
            pieces.push(p.to_owned());
            pieces.len() < 3
        })
        .unwrap();
    assert_eq!(g.stop, chatglm::StopReason::Cancelled);
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces.concat(), g.text);
}

#[test]
fn same_seed_same_text_for_any_thread_count() {
    let engine = engine("threads");
    let reply = |threads: usize| {
        let opts = SessionOptions {
            threads,
            ..SessionOptions::default()
        };
        let mut s = Session::new(Arc::clone(&engine), opts).unwrap();
        assert_eq!(s.threads(), threads);
        let mut o = GenerateOptions {
            max_new_tokens: 24,
            ..GenerateOptions::default()
        };
        o.sampler.seed = 1234;
        o.sampler.temperature = 0.9;
        o.sampler.top_k = 40;
        let g = s.chat("tell me a story", &o, &mut |_| true).unwrap();
        (g.ids, g.text)
    };
    let one = reply(1);
    assert_eq!(one.0.len(), 24);
    assert_eq!(one, reply(2));
    assert_eq!(one, reply(3));
}
