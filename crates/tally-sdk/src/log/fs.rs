//! The filesystem seam: every byte the log reads or writes goes through
//! [`Filesystem`], so tests inject faults (failed fsync, ENOSPC, short and
//! torn writes, power loss) instead of hoping for them.
//!
//! [`StdFs`] is the real one. [`MemFs`] keeps two images of every file, as
//! redb's crash tests do: the *live* one (what reads see) and the *durable*
//! one (what a completed `sync_data` / `sync_dir` made permanent).
//! [`MemFs::crash`] throws the live image away, which is exactly what a power
//! cut does to unsynced writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// An open file, positioned for appending.
pub trait FileHandle: Send + Sync + Debug {
    /// Appends `buf` at the end of the file; may write fewer bytes (returns how many).
    fn append(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Reads at `offset` into `buf`; returns the number of bytes read (0 at EOF).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Makes the file's data durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (used to undo a failed, partial group write).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// The current size in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl dyn FileHandle {
    /// Appends all of `buf`, retrying short writes.
    pub fn append_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.append(buf) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Fills `buf` from `offset`; returns how many bytes were available.
    pub fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// The directory and file operations the log needs.
pub trait Filesystem: Send + Sync + Debug {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names (not paths) of the regular files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new empty file (fails if it exists) opened for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FileHandle>>;
    /// Opens an existing file for appending and reading.
    fn open(&self, path: &Path) -> io::Result<Box<dyn FileHandle>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Writes a file readable by its owner only (0600 on Unix), replacing
    /// `path` atomically: write a temporary file, sync it, rename, sync the
    /// directory.
    fn write_private_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file (atomic within a directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Narrows the access of an existing file or directory to exactly
    /// `mode` (Unix permission bits; the SDK's state file and data
    /// directory are its owner's only). The default does nothing: a
    /// filesystem without Unix permissions has its own access control.
    fn restrict_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        let _ = (path, mode);
        Ok(())
    }
}

/// The real filesystem (`std::fs`).
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

impl FileHandle for StdFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
        }
        #[cfg(windows)]
        {
            std::os::windows::fs::FileExt::seek_read(&self.0, buf, offset)
        }
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Filesystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let mut options = OpenOptions::new();
        options.read(true).append(true).create_new(true);
        private_mode(&mut options);
        Ok(Box::new(StdFile(options.open(path)?)))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
    fn write_private_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(path);
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        private_mode(&mut options);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        self.sync_dir(parent(path))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn restrict_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if std::fs::metadata(path)?.permissions().mode() & 0o777 != mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
        }
        #[cfg(not(unix))]
        let _ = (path, mode);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            // Windows has no directory handle to sync; NTFS journals
            // metadata itself.
            let _ = dir;
            Ok(())
        }
    }
}

fn private_mode(options: &mut OpenOptions) {
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    }
    #[cfg(not(unix))]
    {
        let _ = options;
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Faults a [`MemFs`] injects on demand.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Every `sync_data` and `sync_dir` fails with EIO while set.
    pub fail_sync: bool,
    /// Appends fail with ENOSPC once the live images hold this many bytes in total.
    pub space_limit: Option<u64>,
    /// Each append writes at most this many bytes (short writes).
    pub max_write: Option<usize>,
    /// On [`MemFs::crash`], keep this many bytes of each file's unsynced
    /// appended tail (a torn write) instead of none.
    pub torn_tail_bytes: usize,
    /// The power is cut after this many more syncs (`sync_data` and
    /// `sync_dir`, counted from when the faults are set): later syncs
    /// report success and make nothing durable, so [`MemFs::crash`] gives
    /// the image of a power cut between those two syncs while the code
    /// under test runs on.
    pub power_cut_after_syncs: Option<u64>,
}

#[derive(Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct MemState {
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    live_names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    faults: Faults,
    syncs: u64,
    /// Syncs since the faults were set.
    syncs_since_faults: u64,
}

impl MemState {
    /// Counts a sync about to succeed; false when the power is already
    /// cut ([`Faults::power_cut_after_syncs`]): it makes nothing durable.
    fn sync_lands(&mut self) -> bool {
        if self
            .faults
            .power_cut_after_syncs
            .is_some_and(|n| self.syncs_since_faults >= n)
        {
            return false;
        }
        self.syncs_since_faults += 1;
        true
    }

    fn live_total(&self) -> u64 {
        self.live_names
            .values()
            .filter_map(|i| self.inodes.get(i))
            .map(|n| n.live.len() as u64)
            .sum()
    }
}

/// An in-memory filesystem with a live and a durable image and injectable
/// faults, for tests of crash safety. Cheap to clone (shared state).
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    state: Arc<Mutex<MemState>>,
}

#[derive(Debug)]
struct MemFile {
    fs: MemFs,
    inode: u64,
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file")
}

impl MemFs {
    /// An empty filesystem.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the faults to inject from now on.
    pub fn set_faults(&self, faults: Faults) {
        let mut s = self.lock();
        s.faults = faults;
        s.syncs_since_faults = 0;
    }

    /// How many successful `sync_data` calls were made.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Simulates a power cut: returns a new filesystem holding only what
    /// was synced here (plus `torn_tail_bytes` of each unsynced appended
    /// tail, a torn write). This one is left as it was, so a log still
    /// running on it (the process that "died") cannot touch the image the
    /// next open sees.
    pub fn crash(&self) -> MemFs {
        let s = self.lock();
        let torn = s.faults.torn_tail_bytes;
        let mut after = MemState {
            next_inode: s.next_inode,
            live_names: s.durable_names.clone(),
            durable_names: s.durable_names.clone(),
            dirs: s.dirs.clone(),
            ..MemState::default()
        };
        for inode in after.live_names.values() {
            let Some(node) = s.inodes.get(inode) else {
                continue;
            };
            let mut image = node.durable.clone();
            if node.live.starts_with(&node.durable) {
                let keep = (node.durable.len() + torn).min(node.live.len());
                image.extend_from_slice(&node.live[node.durable.len()..keep]);
            }
            after.inodes.insert(
                *inode,
                Inode {
                    live: image.clone(),
                    durable: image,
                },
            );
        }
        MemFs {
            state: Arc::new(Mutex::new(after)),
        }
    }

    /// The live content of a file (for tests that corrupt bytes).
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let inode = s.live_names.get(path)?;
        s.inodes.get(inode).map(|n| n.live.clone())
    }

    /// Replaces a file's content in both images (a test's corruption).
    pub fn replace_file(&self, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
        let mut s = self.lock();
        let inode = *s.live_names.get(path).ok_or_else(not_found)?;
        let node = s.inodes.get_mut(&inode).ok_or_else(not_found)?;
        node.live = bytes.clone();
        node.durable = bytes;
        Ok(())
    }
}

impl FileHandle for MemFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.fs.lock();
        let mut n = buf.len();
        if let Some(max) = s.faults.max_write {
            n = n.min(max.max(1));
        }
        if let Some(limit) = s.faults.space_limit {
            let free = limit.saturating_sub(s.live_total()) as usize;
            if free == 0 {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            n = n.min(free);
        }
        let node = s.inodes.get_mut(&self.inode).ok_or_else(not_found)?;
        node.live.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let s = self.fs.lock();
        let node = s.inodes.get(&self.inode).ok_or_else(not_found)?;
        let start = (offset as usize).min(node.live.len());
        let n = buf.len().min(node.live.len() - start);
        buf[..n].copy_from_slice(&node.live[start..start + n]);
        Ok(n)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.fs.lock();
        if s.faults.fail_sync {
            return Err(io::Error::other("injected fsync failure"));
        }
        s.syncs += 1;
        if !s.sync_lands() {
            return Ok(());
        }
        let node = s.inodes.get_mut(&self.inode).ok_or_else(not_found)?;
        node.durable = node.live.clone();
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.fs.lock();
        let node = s.inodes.get_mut(&self.inode).ok_or_else(not_found)?;
        node.live.resize(len as usize, 0);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        let s = self.fs.lock();
        let node = s.inodes.get(&self.inode).ok_or_else(not_found)?;
        Ok(node.live.len() as u64)
    }
}

impl Filesystem for MemFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories are durable at once: the log creates its directory
        // before anything is in it.
        let mut s = self.lock();
        s.dirs.insert(dir.to_path_buf());
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found());
        }
        Ok(s.live_names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let mut s = self.lock();
        if s.live_names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if !s.dirs.contains(parent(path)) {
            return Err(not_found());
        }
        s.next_inode += 1;
        let inode = s.next_inode;
        s.inodes.insert(inode, Inode::default());
        s.live_names.insert(path.to_path_buf(), inode);
        Ok(Box::new(MemFile {
            fs: self.clone(),
            inode,
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let s = self.lock();
        let inode = *s.live_names.get(path).ok_or_else(not_found)?;
        Ok(Box::new(MemFile {
            fs: self.clone(),
            inode,
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.file(path).ok_or_else(not_found)
    }
    fn write_private_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(path);
        let _ = self.remove(&tmp);
        let mut file = self.create(&tmp)?;
        (*file).append_all(bytes)?;
        file.sync_data()?;
        drop(file);
        self.rename(&tmp, path)?;
        self.sync_dir(parent(path))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.live_names.remove(path).ok_or_else(not_found)?;
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let inode = s.live_names.remove(from).ok_or_else(not_found)?;
        s.live_names.insert(to.to_path_buf(), inode);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.faults.fail_sync {
            return Err(io::Error::other("injected fsync failure"));
        }
        if !s.sync_lands() {
            return Ok(());
        }
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<(PathBuf, u64)> = s
            .live_names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.extend(entries);
        Ok(())
    }
}
