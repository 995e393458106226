//! Progress bars on a terminal, nothing otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// True when progress should be drawn: stderr is a terminal.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal()
}

/// A byte-counting bar when `show` (a spinner when `len` is unknown, 0), a hidden one otherwise.
pub fn bytes(show: bool, len: u64, message: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    if len == 0 {
        let style = ProgressStyle::with_template("{spinner} {msg:30!} {bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        return ProgressBar::new_spinner()
            .with_style(style)
            .with_message(message);
    }
    let style =
        ProgressStyle::with_template("{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_message(message)
}

/// A bar counting steps (layers) when `show`, a hidden one otherwise.
pub fn steps(show: bool, len: u64, message: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{msg:30!} [{bar:30}] {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_message(message)
}
