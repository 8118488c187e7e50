//! The service's log file: one line per entry, stamped in UTC (RFC 3339), appended and flushed
//! line by line, and rotated by size: `bulwark-service.log` is renamed `.1` (and `.1` `.2`, ...)
//! when the next line would take it over its bound, keeping a fixed number of old files. A line
//! is never split across files, and the disk the log can take is bounded: `(keep + 1) * max_bytes`
//! (a single line longer than the bound is cut to it).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A size-bounded, rotating log file.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

impl LogFile {
    /// Opens (appends to) `path`, creating its directory; rotates at `max_bytes` (at least 1024)
    /// keeping `keep` old files.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<LogFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1024),
            keep,
            file,
            size,
        })
    }

    /// The file `n` rotations old (0: the current one).
    pub fn rotated(&self, n: u32) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file = File::create(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }

    /// Appends `line`, stamped with `unix_secs`, rotating first if it would not fit.
    pub fn write_line(&mut self, unix_secs: u64, line: &str) -> io::Result<()> {
        let stamp = rfc3339(unix_secs);
        // One line per entry: line breaks inside it are escaped.
        let text = line.replace('\r', "\\r").replace('\n', "\\n");
        let room = usize::try_from(self.max_bytes)
            .unwrap_or(usize::MAX)
            .saturating_sub(stamp.len() + 2);
        let mut cut = room.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let entry = format!("{stamp} {}\n", &text[..cut]);
        let len = entry.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(entry.as_bytes())?;
        self.file.flush()?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn rotation_keeps_the_bound_whole_lines_and_the_newest_files() {
        let dir = std::env::temp_dir().join(format!("bulwark-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("logs/bulwark-service.log");
        let mut log = LogFile::open(&path, 1024, 2).unwrap();
        for i in 0..200 {
            log.write_line(
                1_800_000_000 + i,
                &format!("line {i:03} {}", "x".repeat(40)),
            )
            .unwrap();
        }
        // A line with a line break stays one line.
        log.write_line(1_800_000_500, "two\nparts").unwrap();
        let files: Vec<String> = (0..4)
            .map(|n| std::fs::read_to_string(log.rotated(n)).unwrap_or_default())
            .collect();
        // The current file and two old ones; none older.
        assert!(!files[0].is_empty() && !files[1].is_empty() && !files[2].is_empty());
        assert!(files[3].is_empty());
        for f in &files[..3] {
            assert!(f.len() <= 1024, "{}", f.len());
            for line in f.lines() {
                assert!(line.starts_with("2027-01-15T"), "{line}");
                assert!(
                    line.ends_with(&"x".repeat(40)) || line.ends_with("two\\nparts"),
                    "{line}"
                );
            }
        }
        // The newest lines are in the current file, in order, across the files.
        assert!(files[0].ends_with("two\\nparts\n"));
        let all: Vec<&str> = files[..3].iter().rev().flat_map(|f| f.lines()).collect();
        let numbers: Vec<u32> = all
            .iter()
            .filter_map(|l| l.split(' ').nth(2).and_then(|n| n.parse().ok()))
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(numbers.last(), Some(&199));
        // A line longer than the bound is cut to it on a char boundary.
        log.write_line(1_800_000_600, &"é".repeat(2000)).unwrap();
        let current = std::fs::read_to_string(log.rotated(0)).unwrap();
        assert!(current.len() <= 1024);
        // Reopened, it appends.
        drop(log);
        let mut log = LogFile::open(&path, 1024, 2).unwrap();
        log.write_line(1_800_000_700, "after").unwrap();
        assert!(std::fs::read_to_string(log.rotated(0))
            .unwrap()
            .ends_with("after\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
