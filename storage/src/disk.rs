//! The real log backend: segment files in a directory, written through
//! io_uring on the storage core (glommio), read back through mmap.
//!
//! Files are opened with O_DIRECT where the filesystem allows it, so a flush
//! moves the log's bytes straight to the device without filling the page
//! cache. Where O_DIRECT is refused (tmpfs, some overlay and network
//! filesystems answer EINVAL), the directory falls back to buffered io_uring
//! writes; `fdatasync` makes either durable. The mode is chosen once per
//! directory, by probing, and reported.

use std::io;
use std::path::{Path, PathBuf};

use futures::AsyncWriteExt;
use glommio::io::{BufferedFile, DmaFile, OpenOptions, StreamWriter, StreamWriterBuilder};

use crate::io::{LogFile, StreamFile};
use crate::log::LogDir;

/// Write alignment: the largest logical block size in common use, so that
/// O_DIRECT works on 512-byte and 4 KiB devices alike.
pub const ALIGNMENT: u64 = 4096;

/// Zeros written per request when a segment is created.
const ZERO_FILL_CHUNK: usize = 1 << 20;
/// Bytes a stream file (a checkpoint image) buffers before handing them to
/// io_uring.
const STREAM_BUFFER_BYTES: usize = 256 * 1024;

/// How the directory's files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// O_DIRECT through io_uring.
    Direct,
    /// Buffered writes through io_uring (the filesystem refused O_DIRECT).
    Buffered,
}

/// A directory of log segments on a real filesystem.
#[derive(Debug, Clone)]
pub struct DiskDir {
    path: PathBuf,
    mode: WriteMode,
}

/// One open segment file.
#[derive(Debug)]
pub struct DiskFile {
    path: PathBuf,
    file: Handle,
    size: u64,
}

#[derive(Debug)]
enum Handle {
    Direct(DmaFile),
    Buffered(BufferedFile),
}

/// `path` made absolute: glommio refuses to open a directory by a relative
/// path (EBADF), so every path a `DiskDir` hands it is absolute.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl DiskDir {
    /// Uses (and creates) `path`. Must run on a glommio executor: it probes
    /// whether the filesystem takes O_DIRECT.
    pub async fn new(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let probe = path.join(".direct-probe");
        let mode = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&probe)
            .await
        {
            Ok(file) => {
                file.close().await?;
                WriteMode::Direct
            }
            Err(e) => {
                let e = io::Error::from(e);
                if e.raw_os_error() != Some(libc_einval()) {
                    return Err(e);
                }
                tracing::warn!(dir = %path.display(), "the filesystem refuses O_DIRECT; the log uses buffered io_uring writes with fdatasync");
                WriteMode::Buffered
            }
        };
        let _ = std::fs::remove_file(&probe);
        Ok(Self {
            path: absolute(path),
            mode,
        })
    }

    /// A directory for reading only (no executor needed): `map` and `list`
    /// work; `create` and `open` must not be called.
    pub fn for_reading(path: &Path) -> Self {
        Self {
            path: absolute(path),
            mode: WriteMode::Buffered,
        }
    }

    /// A directory of files written through buffered io_uring (checkpoint
    /// images), made when its first file is. Its operations must run on a
    /// glommio executor; `map` and `list` work anywhere (an absent
    /// directory lists no file).
    pub fn buffered(path: &Path) -> Self {
        Self {
            path: absolute(path),
            mode: WriteMode::Buffered,
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How files are written.
    pub fn mode(&self) -> WriteMode {
        self.mode
    }

    async fn open_handle(&self, path: &Path, create: bool) -> io::Result<Handle> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(create)
            .truncate(create);
        Ok(match self.mode {
            WriteMode::Direct => Handle::Direct(options.dma_open(path).await?),
            WriteMode::Buffered => Handle::Buffered(options.buffered_open(path).await?),
        })
    }

    /// fsync of the directory (the same call as ever: `sync_all` on the
    /// directory), on glommio's blocking thread so that the executor keeps
    /// running meanwhile.
    async fn sync_path(&self) -> io::Result<()> {
        let path = self.path.clone();
        glommio::executor()
            .spawn_blocking(move || std::fs::File::open(&path)?.sync_all())
            .await
    }
}

/// A stream file on disk: buffered io_uring writes, fdatasync on close.
pub struct DiskStream {
    out: StreamWriter,
}

impl std::fmt::Debug for DiskStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiskStream")
    }
}

impl StreamFile for DiskStream {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes).await
    }

    async fn close_synced(mut self) -> io::Result<()> {
        self.out.close().await
    }
}

/// EINVAL, as open(2) reports a refused O_DIRECT.
fn libc_einval() -> i32 {
    22
}

impl LogDir for DiskDir {
    type File = DiskFile;
    type Stream = DiskStream;
    type Map = Mapped;

    async fn create_stream(&self, name: &str) -> io::Result<DiskStream> {
        // mkdir on glommio's blocking thread; an existing one is fine.
        glommio::io::Directory::create(&self.path)
            .await?
            .close()
            .await?;
        let file = BufferedFile::create(self.path.join(name)).await?;
        let out = StreamWriterBuilder::new(file)
            .with_sync_on_close_disabled(false)
            .with_buffer_size(STREAM_BUFFER_BYTES)
            .build();
        Ok(DiskStream { out })
    }

    /// On glommio's blocking thread: the executor keeps running meanwhile.
    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        glommio::io::rename(self.path.join(from), self.path.join(to)).await?;
        Ok(())
    }

    /// On glommio's blocking thread, as `rename`.
    async fn remove(&self, name: &str) -> io::Result<()> {
        glommio::io::remove(self.path.join(name)).await?;
        Ok(())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.sync_path().await
    }

    async fn create(&self, name: &str, size_bytes: u64) -> io::Result<DiskFile> {
        let path = self.path.join(name);
        let handle = self.open_handle(&path, true).await?;
        let mut file = DiskFile {
            path,
            file: handle,
            size: size_bytes,
        };
        // Write the zeros out (rather than fallocate a hole): later
        // overwrites then touch allocated blocks, and fdatasync has no
        // extent metadata to commit.
        let mut offset = 0;
        let chunk = vec![0u8; ZERO_FILL_CHUNK];
        while offset < size_bytes {
            let len = (size_bytes - offset).min(ZERO_FILL_CHUNK as u64) as usize;
            file.write_at(offset, &chunk[..len]).await?;
            offset += len as u64;
        }
        file.sync().await?;
        self.sync_path().await?;
        Ok(file)
    }

    async fn open(&self, name: &str) -> io::Result<DiskFile> {
        let path = self.path.join(name);
        let size = std::fs::metadata(&path)?.len();
        let handle = self.open_handle(&path, false).await?;
        Ok(DiskFile {
            path,
            file: handle,
            size,
        })
    }

    fn map(&self, name: &str) -> io::Result<Mapped> {
        let file = std::fs::File::open(self.path.join(name))?;
        if file.metadata()?.len() == 0 {
            return Ok(Mapped(None));
        }
        // SAFETY: the log's files are written only by this process, which
        // holds the datadir's LOCK, and never while a map is alive: boot
        // reads the log before the storage core writes to it.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Mapped(Some(map)))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        match std::fs::read_dir(&self.path) {
            Ok(entries) => {
                for entry in entries {
                    if let Some(name) = entry?.file_name().to_str() {
                        names.push(name.to_string());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        names.sort();
        Ok(names)
    }

    fn alignment(&self) -> u64 {
        ALIGNMENT
    }
}

/// A mapped segment (an empty file maps to nothing).
#[derive(Debug)]
pub struct Mapped(Option<memmap2::Mmap>);

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl LogFile for DiskFile {
    async fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let written = match &self.file {
            Handle::Direct(file) => {
                if !offset.is_multiple_of(ALIGNMENT)
                    || !(bytes.len() as u64).is_multiple_of(ALIGNMENT)
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "unaligned O_DIRECT write of {} bytes at {offset}",
                            bytes.len()
                        ),
                    ));
                }
                let mut buffer = file.alloc_dma_buffer(bytes.len());
                buffer.as_bytes_mut().copy_from_slice(bytes);
                file.write_at(buffer, offset).await?
            }
            Handle::Buffered(file) => file.write_at(bytes.to_vec(), offset).await?,
        };
        if written != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write: {written} of {} bytes at {offset}",
                    bytes.len()
                ),
            ));
        }
        Ok(())
    }

    async fn sync(&mut self) -> io::Result<()> {
        match &self.file {
            Handle::Direct(file) => file.fdatasync().await?,
            Handle::Buffered(file) => file.fdatasync().await?,
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        // A plain descriptor: O_DIRECT reads would need aligned buffers.
        let file = std::fs::File::open(&self.path)?;
        let mut out = vec![0u8; len];
        file.read_exact_at(&mut out, offset)?;
        Ok(out)
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn extend(&mut self, size_bytes: u64) -> io::Result<()> {
        if size_bytes <= self.size {
            return Ok(());
        }
        // ftruncate through a plain descriptor; the repair then writes the
        // zeros out (aligned) so the blocks are allocated.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(size_bytes)?;
        self.size = size_bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;
    use crate::record::RecordKind;

    fn run<T: 'static>(future: impl std::future::Future<Output = T> + 'static) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .make()
            .expect("executor")
            .run(future)
    }

    #[test]
    fn records_written_through_io_uring_read_back_through_mmap() {
        let dir = std::env::temp_dir().join(format!("fulmen-disk-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.clone();
        run(async move {
            let disk = DiskDir::new(&path).await.unwrap();
            let (mut log, recovery) = Log::open(disk.clone(), 64 * 1024).await.unwrap();
            assert!(recovery.records.is_empty());
            for i in 0..200u32 {
                log.append(
                    RecordKind::MiniBlock,
                    &vec![i as u8; 1 + (i as usize * 37) % 900],
                )
                .unwrap();
                if i % 3 == 0 {
                    log.flush().await.unwrap();
                }
                if log.wants_next() {
                    log.prepare_next().await.unwrap();
                }
            }
            log.flush().await.unwrap();
        });
        let (recovery, tail) = crate::log::read_log(&DiskDir::for_reading(&dir)).unwrap();
        assert_eq!(recovery.records.len(), 200);
        for (i, (_, kind, payload)) in recovery.records.iter().enumerate() {
            assert_eq!(*kind, RecordKind::MiniBlock);
            assert_eq!(payload.to_vec(), vec![i as u8; 1 + (i * 37) % 900]);
        }
        assert!(tail.segment > 0, "the records span several segments");
        assert!(recovery.truncated.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
