//! The `chatglm` command-line tool.
fn main() {}
