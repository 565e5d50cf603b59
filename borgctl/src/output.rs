//! What borgctl prints: `out!`/`outln!` (stdout writes that return their error, so that a reader
//! that went away ends borgctl quietly), JSON or YAML for `-o json|yaml`.

use crate::cli::Output;
use anyhow::anyhow;

/// `print!` that returns the write's error instead of panicking, so that a reader that went
/// away (`borgctl jobs | head`) ends borgctl quietly (see `main`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `println!` that returns the write's error (see [`out`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// The output format chosen with `-o` (set once at start).
pub static FORMAT: std::sync::OnceLock<Output> = std::sync::OnceLock::new();

/// Prints a machine-readable value as JSON, or YAML with `-o yaml`.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    if FORMAT.get() == Some(&Output::Yaml) {
        out!("{}", serde_saphyr::to_string(v).map_err(|e| anyhow!("YAML output: {e}"))?)?;
    } else {
        outln!("{}", serde_json::to_string_pretty(v)?)?;
    }
    Ok(())
}

/// Whether `e` comes from writing to a pipe or socket whose reader has gone.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
