use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::config::FileConfig;
use crate::output::batch::EncodedBatch;
use crate::output::sink::{Sink, SinkFailure};

/// Appends encoded records; rotation renames `path` to `path.1` (shifting older files up to `keep`).
#[derive(Debug)]
pub struct FileSink {
    config: FileConfig,
    file: File,
    size: u64,
    opened_at: Instant,
}

impl FileSink {
    /// Opens (creating) the file for appending; a missing directory or no permission is an error.
    pub fn open(config: FileConfig) -> io::Result<Self> {
        let file = open_append(&config.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open {}: {e}", config.path.display()),
            )
        })?;
        let size = file.metadata()?.len();
        Ok(FileSink {
            config,
            file,
            size,
            opened_at: Instant::now(),
        })
    }

    fn rotated(&self, generation: usize) -> PathBuf {
        let mut name = self.config.path.clone().into_os_string();
        name.push(format!(".{generation}"));
        name.into()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        ignore_missing(std::fs::remove_file(self.rotated(self.config.keep)))?;
        for generation in (1..self.config.keep).rev() {
            ignore_missing(std::fs::rename(
                self.rotated(generation),
                self.rotated(generation + 1),
            ))?;
        }
        std::fs::rename(&self.config.path, self.rotated(1))?;
        self.file = open_append(&self.config.path)?;
        self.size = 0;
        self.opened_at = Instant::now();
        tracing::info!(path = %self.config.path.display(), "rotated output file");
        Ok(())
    }

    fn rotate_if_old(&mut self) -> io::Result<()> {
        let old = self
            .config
            .rotate_interval_s
            .is_some_and(|s| self.opened_at.elapsed() >= Duration::from_secs(s));
        if old && self.size > 0 {
            self.rotate()?;
        }
        Ok(())
    }

    /// Lines `from..to` of `batch` that fit in the current file: up to `rotate_bytes`, and
    /// at least one line in an empty file (a longer line gets a file of its own).
    fn fitting(&self, batch: &EncodedBatch, from: usize) -> usize {
        let Some(max) = self.config.rotate_bytes else {
            return batch.len();
        };
        let room = max.saturating_sub(self.size);
        let mut to = from;
        while to < batch.len() && batch.text_len(from, to + 1) as u64 <= room {
            to += 1;
        }
        if to == from && self.size == 0 {
            to += 1;
        }
        to
    }

    /// Appends lines from `from` on, rotating where the size limit falls; `written` counts the
    /// lines on disk.
    fn write_lines(
        &mut self,
        batch: &EncodedBatch,
        from: usize,
        written: &mut usize,
    ) -> io::Result<()> {
        self.rotate_if_old()?;
        let mut at = from;
        while at < batch.len() {
            let to = self.fitting(batch, at);
            if to == at {
                self.rotate()?;
                continue;
            }
            let text = batch.text(at..to);
            self.file.write_all(text)?;
            self.size += text.len() as u64;
            *written += to - at;
            at = to;
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &EncodedBatch, from: usize) -> Result<(), SinkFailure> {
        let mut written = 0;
        self.write_lines(batch, from, &mut written)
            .map_err(|error| SinkFailure { written, error })
    }

    fn tick(&mut self) -> io::Result<()> {
        self.rotate_if_old()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn open_append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, tag: &str) -> EncodedBatch {
        let mut b = EncodedBatch::new();
        for i in 0..n {
            b.push_line(format!("{{\"{tag}\":{i:04}}}").as_bytes());
        }
        b
    }

    fn read(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn size_rotation_keeps_n_files_and_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.jsonl");
        let mut config = FileConfig::at(path.clone());
        // Each line is `{"a":0000}\n` = 11 bytes: three fit in 40 bytes.
        config.rotate_bytes = Some(40);
        config.keep = 2;
        let mut sink = FileSink::open(config).unwrap();
        sink.write(&batch(10, "a"), 0).unwrap();
        sink.flush().unwrap();
        let current = read(&path);
        let one = read(&dir.path().join("flows.jsonl.1"));
        let two = read(&dir.path().join("flows.jsonl.2"));
        assert!(!dir.path().join("flows.jsonl.3").exists());
        assert_eq!(current.lines().collect::<Vec<_>>(), ["{\"a\":0009}"]);
        assert_eq!(one.lines().count(), 3);
        assert!(one.starts_with("{\"a\":0006}"));
        assert!(two.starts_with("{\"a\":0003}"));
        for f in [&current, &one, &two] {
            assert!(f.len() <= 40 && f.ends_with('\n'));
        }
    }

    #[test]
    fn write_from_skips_already_written_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let mut sink = FileSink::open(FileConfig::at(path.clone())).unwrap();
        sink.write(&batch(5, "b"), 3).unwrap();
        assert_eq!(read(&path), "{\"b\":0003}\n{\"b\":0004}\n");
    }

    #[test]
    fn time_rotation_on_tick_skips_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut config = FileConfig::at(path.clone());
        config.rotate_interval_s = Some(1);
        let mut sink = FileSink::open(config).unwrap();
        sink.opened_at -= Duration::from_secs(2);
        sink.tick().unwrap();
        assert!(!dir.path().join("t.jsonl.1").exists(), "empty file rotated");
        sink.write(&batch(1, "c"), 0).unwrap();
        sink.opened_at -= Duration::from_secs(2);
        sink.tick().unwrap();
        assert_eq!(read(&dir.path().join("t.jsonl.1")), "{\"c\":0000}\n");
        assert_eq!(read(&path), "");
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        FileSink::open(FileConfig::at(path.clone()))
            .unwrap()
            .write(&batch(1, "x"), 0)
            .unwrap();
        let mut again = FileSink::open(FileConfig::at(path.clone())).unwrap();
        assert_eq!(again.size, 11);
        again.write(&batch(1, "y"), 0).unwrap();
        assert_eq!(read(&path), "{\"x\":0000}\n{\"y\":0000}\n");
    }
}
