//! llama.cpp's spelling of flags, before clap parses them, and usage errors in one line.
//!
//! llama.cpp has multi-letter flags with one dash (`-sys`, `-ctk`, `-ngl`), which clap would
//! read as a short flag and its value (`-s ys`). The ones that exist here are rewritten to
//! their long names; the ones that do not apply to this runtime are refused by name with the
//! reason. Values are never rewritten: a token after a flag that takes one is left alone.

use std::ffi::OsString;

/// llama.cpp's one-dash names of flags this tool has, and their long names here.
const ALIASES: &[(&str, &str)] = &[
    ("-sys", "--system-prompt"),
    ("-ctk", "--cache-type-k"),
    ("-ctv", "--cache-type-v"),
];

/// llama.cpp flags that do not apply here, and why (one line each).
const REFUSED: &[(&[&str], &str)] = &[
    (
        &[
            "-ngl",
            "--n-gpu-layers",
            "--gpu-layers",
            "-ngld",
            "--n-gpu-layers-draft",
        ],
        "this runtime runs on the CPU only: there are no layers to offload",
    ),
    (
        &[
            "-mg",
            "--main-gpu",
            "-ts",
            "--tensor-split",
            "-sm",
            "--split-mode",
            "-dev",
            "--device",
        ],
        "this runtime runs on the CPU only: there is no GPU to choose",
    ),
    (
        &["-nkvo", "--no-kv-offload"],
        "this runtime runs on the CPU only: the KV cache is always in memory",
    ),
    (
        &["--mlock"],
        "the model file is memory-mapped, not locked in memory (--no-mmap reads it instead)",
    ),
    (
        &["-fa", "--flash-attn"],
        "attention always runs on this runtime's own CPU kernels; there is no switch",
    ),
    (
        &["--numa"],
        "there is no NUMA placement here; -t sets the number of threads",
    ),
    (
        &["-tb", "--threads-batch"],
        "one pool of -t threads runs both the prompt and the reply",
    ),
    (
        &["-b", "--batch-size", "-ub", "--ubatch-size"],
        "the prompt batch size is fixed by the runtime",
    ),
    (
        &["--lora", "--lora-scaled", "--control-vector"],
        "adapters are not supported; convert merged weights instead",
    ),
    (
        &[
            "-cnv",
            "--conversation",
            "-i",
            "--interactive",
            "-if",
            "--interactive-first",
        ],
        "use `chatglm chat` for an interactive conversation",
    ),
];

/// A llama.cpp flag that does not apply here.
#[derive(Debug)]
pub struct Refused {
    /// The flag as typed (without a `=value`).
    pub flag: String,
    /// Why it does not apply.
    pub reason: &'static str,
}

/// `args` with llama.cpp's one-dash names replaced by their long names, or the first flag
/// that does not apply here. `command` describes the flags (which take a value).
pub fn rewrite(command: &clap::Command, args: Vec<OsString>) -> Result<Vec<OsString>, Refused> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let mut sub: Option<&clap::Command> = None;
    let mut skip_value = false;
    let mut rest_are_values = false;
    for arg in iter {
        let text = arg.to_str().map(str::to_owned);
        if skip_value || rest_are_values {
            skip_value = false;
            out.push(arg);
            continue;
        }
        let Some(text) = text else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            rest_are_values = true;
            out.push(arg);
            continue;
        }
        let Some(current) = sub else {
            sub = command.find_subcommand(&text);
            out.push(arg);
            continue;
        };
        let (name, value) = match text.split_once('=') {
            Some((n, v)) if n.starts_with('-') => (n, Some(v)),
            _ => (text.as_str(), None),
        };
        if let Some((_, reason)) = REFUSED
            .iter()
            .find(|(names, _)| names.contains(&name) && !defined(current, name))
        {
            return Err(Refused {
                flag: name.to_owned(),
                reason,
            });
        }
        let name = ALIASES
            .iter()
            .find(|(short, _)| *short == name)
            .map_or(name, |(_, long)| *long);
        skip_value = value.is_none() && takes_value(current, name);
        out.push(match value {
            Some(v) => OsString::from(format!("{name}={v}")),
            None => OsString::from(name),
        });
    }
    Ok(out)
}

/// Whether `command` has the flag `name` (`-x` or `--long`) itself.
fn defined(command: &clap::Command, name: &str) -> bool {
    find(command, name).is_some()
}

fn find<'a>(command: &'a clap::Command, name: &str) -> Option<&'a clap::Arg> {
    if let Some(long) = name.strip_prefix("--") {
        command.get_arguments().find(|a| {
            a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|v| v.contains(&long))
        })
    } else {
        let mut chars = name.strip_prefix('-')?.chars();
        let (c, None) = (chars.next()?, chars.next()) else {
            return None;
        };
        command.get_arguments().find(|a| a.get_short() == Some(c))
    }
}

/// Whether the flag `name` of `command` is followed by a value (`-m FILE`, not `--json`).
fn takes_value(command: &clap::Command, name: &str) -> bool {
    find(command, name).is_some_and(|a| a.get_action().takes_values())
}

/// A usage error as one line, and a hint: clap's message without its usage block.
pub fn usage_error(
    command: &clap::Command,
    error: &clap::Error,
    args: &[OsString],
) -> (String, String) {
    let rendered = error.render().to_string();
    let mut message = String::new();
    let mut items = Vec::new();
    let mut hint = None;
    for line in rendered.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Usage:") || trimmed.starts_with("For more information") {
            break;
        }
        if trimmed.is_empty() {
            continue;
        }
        if let Some(tip) = trimmed.strip_prefix("tip: ") {
            hint = Some(tip.to_owned());
        } else if message.is_empty() {
            message = trimmed
                .strip_prefix("error: ")
                .unwrap_or(trimmed)
                .to_owned();
        } else {
            items.push(trimmed.to_owned());
        }
    }
    if !items.is_empty() {
        message = format!("{} {}", message, items.join(", "));
    }
    let sub = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'))
        .filter(|a| command.find_subcommand(a).is_some());
    let help = match sub {
        Some(s) => format!("`chatglm {s} --help` lists its flags"),
        None => "`chatglm --help` lists the commands".to_owned(),
    };
    let hint = match hint {
        Some(tip) => format!("{tip}; {help}"),
        None => help,
    };
    (message, hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn rewritten(args: &[&str]) -> Result<Vec<String>, String> {
        let args = args.iter().map(OsString::from).collect();
        rewrite(&crate::Cli::command(), args)
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
            .map_err(|r| r.flag)
    }

    #[test]
    fn llama_cpp_names_become_long_flags_and_values_stay() {
        assert_eq!(
            rewritten(&["chatglm", "run", "-m", "f", "-sys", "x", "-ctk", "f16", "-ctv=f32"]),
            Ok([
                "chatglm",
                "run",
                "-m",
                "f",
                "--system-prompt",
                "x",
                "--cache-type-k",
                "f16",
                "--cache-type-v=f32"
            ]
            .map(String::from)
            .to_vec())
        );
        // A value is never rewritten or refused: after a flag that takes one, after `--`.
        for args in [
            &["chatglm", "run", "-p", "-sys"][..],
            &["chatglm", "run", "--prompt", "-ngl"],
            &["chatglm", "run", "-p=-ngl"],
            &["chatglm", "tokenize", "-m", "f", "--", "-ngl"],
        ] {
            assert_eq!(
                rewritten(args),
                Ok(args.iter().map(|a| a.to_string()).collect())
            );
        }
        // Only after the subcommand: `chatglm -ngl` is clap's to report.
        assert!(rewritten(&["chatglm", "-ngl"]).is_ok());
    }

    #[test]
    fn flags_that_do_not_apply_are_refused_by_name() {
        assert_eq!(
            rewritten(&["chatglm", "run", "-ngl", "99"]),
            Err("-ngl".into())
        );
        assert_eq!(
            rewritten(&["chatglm", "chat", "-m", "f", "--n-gpu-layers=99"]),
            Err("--n-gpu-layers".into())
        );
        assert_eq!(
            rewritten(&["chatglm", "bench", "--mlock"]),
            Err("--mlock".into())
        );
        // One-letter flags llama.cpp shares with this tool pass: `-s` is the seed in both.
        assert!(rewritten(&["chatglm", "run", "-s", "1"]).is_ok());
    }
}
