//! Pull progress on stderr: a bar per layer on a terminal, a line per
//! event otherwise, nothing when quiet.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::model::Digest;

/// Number of digest hex characters shown to identify a layer.
const SHORT_DIGEST_LEN: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// indicatif bars, for a terminal.
    Bars,
    /// One line per started, cached and finished blob, for logs and pipes.
    Lines,
    Quiet,
}

impl ProgressMode {
    /// Bars when stderr is a terminal, lines otherwise, nothing when `quiet`.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Self::Quiet
        } else if std::io::stderr().is_terminal() {
            Self::Bars
        } else {
            Self::Lines
        }
    }
}

/// Progress output of one pull.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    bars: MultiProgress,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        let target = if mode == ProgressMode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            mode,
            bars: MultiProgress::with_draw_target(target),
        }
    }

    pub fn quiet() -> Self {
        Self::new(ProgressMode::Quiet)
    }

    /// Prints a status line above the bars, or as a plain line.
    pub fn message(&self, text: &str) {
        match self.mode {
            ProgressMode::Bars => {
                // Printing fails only when stderr is closed; progress is optional.
                let _ = self.bars.println(text);
            }
            ProgressMode::Lines => eprintln!("{text}"),
            ProgressMode::Quiet => {}
        }
    }

    /// Starts tracking one blob of `size` bytes.
    pub fn blob(&self, digest: &Digest, size: u64) -> BlobProgress {
        let label = short_digest(digest);
        let bar = (self.mode == ProgressMode::Bars).then(|| {
            let bar = self.bars.add(ProgressBar::new(size));
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.clone());
            bar
        });
        BlobProgress {
            mode: self.mode,
            label,
            size,
            bar,
        }
    }
}

/// Progress of one blob download.
#[derive(Debug)]
pub struct BlobProgress {
    mode: ProgressMode,
    label: String,
    size: u64,
    bar: Option<ProgressBar>,
}

impl BlobProgress {
    pub fn cached(self) {
        self.finish_with("already cached");
    }

    pub fn started(&self, offset: u64) {
        if self.mode == ProgressMode::Lines {
            if offset == 0 {
                eprintln!("{}: downloading {} bytes", self.label, self.size);
            } else {
                eprintln!("{}: resuming at byte {offset} of {}", self.label, self.size);
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
        }
    }

    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    pub fn retrying(&self, reason: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.set_message(format!("retrying: {reason}")),
            (None, ProgressMode::Lines) => eprintln!("{}: retrying: {reason}", self.label),
            _ => {}
        }
    }

    pub fn done(self) {
        self.finish_with("verified");
    }

    pub fn failed(self) {
        self.finish_with("failed");
    }

    fn finish_with(self, status: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.finish_with_message(status.to_owned()),
            (None, ProgressMode::Lines) => eprintln!("{}: {status}", self.label),
            _ => {}
        }
    }
}

fn short_digest(digest: &Digest) -> String {
    digest.hex()[..SHORT_DIGEST_LEN].to_owned()
}
