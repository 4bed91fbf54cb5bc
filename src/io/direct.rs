//! The output file: written past the page cache where the OS allows it.
//!
//! A `run` writes tens of MB of Parquet that nothing in the process reads back. Through the page
//! cache every 4 KiB of it first takes a fresh cache page from the kernel (allocated, charged,
//! copied into): on the 2-core VMs we measure on, writing a new 33 MB file cost ~0.10 s of kernel
//! time that way and ~0.005 s with `O_DIRECT` (dd, 1 MiB blocks), the same wall time on the
//! disk. So on Linux [`OutFile`] opens the file with `O_DIRECT` and writes whole aligned blocks
//! from one reused buffer; the unaligned tail is written after `O_DIRECT` is switched off.
//! Where the file system refuses direct I/O (tmpfs, some FUSE and network file systems: `EINVAL`
//! at open or at the first write), it falls back to ordinary buffered writes and loses nothing.
//! Elsewhere than Linux it is an ordinary buffered file.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Bytes per write: whole blocks of [`ALIGN`].
const BLOCK: usize = 1 << 20;
/// Alignment of buffer address, length and file offset for `O_DIRECT` (the largest logical block
/// size in common use; 512-byte devices accept it too).
const ALIGN: usize = 4096;

/// A file being written, with its own write buffer (no `BufWriter` needed in front).
pub struct OutFile {
    file: File,
    /// `BLOCK + ALIGN` bytes, of which `buf[start..start + BLOCK]` is aligned to [`ALIGN`].
    buf: Vec<u8>,
    start: usize,
    /// Bytes of the current block filled.
    len: usize,
    /// Whether the file is still open with `O_DIRECT`.
    direct: bool,
}

impl OutFile {
    /// Creates (or truncates) `path` for writing.
    pub fn create(path: &Path) -> io::Result<OutFile> {
        let (file, direct) = open(path)?;
        let buf = vec![0u8; BLOCK + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Ok(OutFile {
            file,
            buf,
            start,
            len: 0,
            direct,
        })
    }

    /// Whether blocks go past the page cache (for tests and diagnostics).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Writes what is buffered, syncs the file to disk and returns it.
    pub fn finish(mut self) -> io::Result<File> {
        // the tail is not a whole number of blocks: written buffered
        self.buffered()?;
        self.flush_block()?;
        self.file.sync_all()?;
        Ok(self.file)
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let (start, len) = (self.start, self.len);
        self.len = 0;
        if self.direct && len % ALIGN == 0 {
            match self.file.write(&self.buf[start..start + len]) {
                Ok(n) if n == len => return Ok(()),
                // a short direct write: the rest goes buffered, from where it stopped
                Ok(n) => {
                    self.buffered()?;
                    return self.file.write_all(&self.buf[start + n..start + len]);
                }
                // the file system accepted O_DIRECT at open but not this write
                Err(e) if e.raw_os_error() == Some(EINVAL) => self.buffered()?,
                Err(e) => return Err(e),
            }
        } else {
            self.buffered()?;
        }
        self.file.write_all(&self.buf[start..start + len])
    }

    /// Switches the file to buffered writes for good.
    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            clear_direct(&self.file)?;
            self.direct = false;
        }
        Ok(())
    }
}

impl Write for OutFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.len;
        let n = data.len().min(room);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == BLOCK {
            self.flush_block()?;
        }
        Ok(n)
    }

    /// Keeps the partial block: flushing it would leave the file offset unaligned for the next
    /// direct write. [`OutFile::finish`] writes it.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
const EINVAL: i32 = libc::EINVAL;
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

#[cfg(target_os = "linux")]
fn open(path: &Path) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    match opts.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((opts.open(path)?, false)),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open(path: &Path) -> io::Result<(File, bool)> {
    Ok((File::create(path)?, false))
}

#[cfg(target_os = "linux")]
fn clear_direct(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this File owns and keeps open; F_GETFL/F_SETFL take and
    // return plain integers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn clear_direct(_file: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset (a misplaced block shows).
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 4099) as u8).collect()
    }

    #[test]
    fn writes_of_any_size_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // empty, under a block, exactly one and two blocks, and a tail after several blocks
        for total in [0, 1, ALIGN - 1, ALIGN, BLOCK, 2 * BLOCK, 3 * BLOCK + 12_345] {
            let data = pattern(total);
            let path = dir.path().join(format!("f{total}"));
            let mut f = OutFile::create(&path).unwrap();
            // pieces of awkward sizes, as an encoder hands them over
            let mut at = 0;
            for step in [7usize, 4096, 1, 100_003, BLOCK + 5].iter().cycle() {
                if at >= total {
                    break;
                }
                let end = (at + step).min(total);
                f.write_all(&data[at..end]).unwrap();
                at = end;
            }
            f.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "{total} bytes");
        }
    }

    #[test]
    fn truncates_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        std::fs::write(&path, pattern(3 * BLOCK)).unwrap();
        let mut f = OutFile::create(&path).unwrap();
        f.write_all(b"short").unwrap();
        f.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }

    #[test]
    fn a_file_switched_to_buffered_midway_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed");
        let data = pattern(2 * BLOCK + 999);
        let mut f = OutFile::create(&path).unwrap();
        f.write_all(&data[..BLOCK]).unwrap();
        // what a refused direct write does: later blocks go buffered at the right offset
        f.buffered().unwrap();
        assert!(!f.is_direct());
        f.write_all(&data[BLOCK..]).unwrap();
        f.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    /// tmpfs: older kernels refuse `O_DIRECT` at open (buffered writes then), 6.6 and later take
    /// it. Either way every byte is kept.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_on_tmpfs_reads_back_exactly() {
        let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) on Linux");
        let path = dir.path().join("shm");
        let data = pattern(BLOCK + 77);
        let mut f = OutFile::create(&path).unwrap();
        f.write_all(&data).unwrap();
        f.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
