//! Read-only memory map of a model file, the identity of the file it maps, and the CLI's
//! report of a bus error on a mapping. The only place in the runtime (besides the C ABI)
//! where `unsafe` is allowed: mapping a file and handling the signal its misuse raises are
//! the two things here that the standard library cannot do safely.
//!
//! The rule for callers: **a mapped model file must not be truncated or overwritten while it
//! is loaded.** Replacing it (writing a new file and renaming it over the old path) cannot
//! crash: the map keeps the old file's pages; it is still reported as a change, since the
//! loaded model no longer is the file its path names. [`Mmap::changed`] detects, at a cost of two `stat`
//! calls, the changes that can be seen from outside; a change between two checks makes the
//! next read of a vanished page raise `SIGBUS`, which [`install_bus_error_handler`] turns into
//! a one-line message in the CLI.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// What identifies a file's contents from outside: its size, device, inode and modification
/// time. A file truncated, extended or written in place changes its size or mtime; a file
/// replaced under its path changes its device or inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    len: u64,
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Self {
                len: meta.len(),
                dev: meta.dev(),
                ino: meta.ino(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or((0, 0), |d| {
                    (d.as_secs() as i64, i64::from(d.subsec_nanos()))
                });
            Self {
                len: meta.len(),
                dev: 0,
                ino: 0,
                mtime,
            }
        }
    }
}

/// Opens `path` for reading, refusing what is not a regular file (a FIFO would block the
/// open, a device or `/proc` file has no fixed size) before opening it.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a model must be a file on disk, not a pipe, device or directory)",
        )
    };
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The path may have been swapped for a FIFO since the check: do not block on it.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// A read-only, private memory map of a whole regular file, with the file and its identity
/// at the time it was mapped.
#[derive(Debug)]
pub(crate) struct Mmap {
    map: memmap2::Mmap,
    file: File,
    path: PathBuf,
    identity: FileIdentity,
}

impl Mmap {
    /// Opens `path` read-only and maps the whole file. An empty file gives an empty slice.
    /// What is not a regular file is refused (`InvalidInput`).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = open_regular(path)?;
        let identity = FileIdentity::of(&file.metadata()?);
        // SAFETY: memmap2 requires that the mapped file is not modified (truncated or
        // overwritten) by anyone while the map lives; otherwise the slice we hand out could
        // change under us or fault (SIGBUS). We map read-only and never write through the map;
        // model files are treated as immutable inputs (the rule in the module docs, the
        // README and chatglm.h, the same contract llama.cpp documents). Nothing in this
        // process writes to the file; `changed` detects what another process did between
        // generations, and `--no-mmap` / `no_mmap` avoid the map for files that may change.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Self {
            map,
            file,
            path: path.to_path_buf(),
            identity,
        })
    }

    /// The mapped bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.map
    }

    /// Whether the file was truncated, resized or written since it was mapped (its size or
    /// mtime differ), or its path now names another file. A path that no longer exists
    /// (the file was unlinked) is not a change: the map holds the file. An error reading the
    /// open file's metadata counts as a change.
    pub(crate) fn changed(&self) -> bool {
        let Ok(now) = self.file.metadata().map(|m| FileIdentity::of(&m)) else {
            return true;
        };
        if now != self.identity {
            return true;
        }
        match std::fs::metadata(&self.path) {
            Ok(m) => {
                let at_path = FileIdentity::of(&m);
                (at_path.dev, at_path.ino) != (self.identity.dev, self.identity.ino)
            }
            Err(_) => false,
        }
    }
}

/// Reads the whole regular file at `path` into memory (no map: the file may then change
/// freely). What is not a regular file is refused (`InvalidInput`).
pub(crate) fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_regular(path)?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes to read the file"),
            )
        })?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The message the bus error handler writes, then exits with status 1.
#[cfg(unix)]
const BUS_ERROR_MESSAGE: &[u8] =
    b"chatglm: error: the model file changed while in use (bus error on the mapping)\n";

/// The `SIGBUS` handler: async-signal-safe (only `write(2)` and `_exit(2)`).
#[cfg(unix)]
extern "C" fn on_bus_error(_signal: libc::c_int) {
    // SAFETY: `write` and `_exit` are async-signal-safe; the buffer is a static byte string of
    // the given length. Nothing is unwound or freed: the process ends here.
    unsafe {
        libc::write(
            libc::STDERR_FILENO,
            BUS_ERROR_MESSAGE.as_ptr().cast(),
            BUS_ERROR_MESSAGE.len(),
        );
        libc::_exit(1);
    }
}

/// For command-line programs: makes a bus error (`SIGBUS`, raised when a mapped model file is
/// truncated or overwritten while it is read) print "chatglm: error: the model file changed
/// while in use (bus error on the mapping)" and exit with status 1, instead of dying silently
/// with status 135. It changes the whole process's handling of `SIGBUS`, so a library or a
/// C host should not call it. Does nothing where there is no `SIGBUS`; a handler that cannot
/// be installed leaves the default behaviour.
pub fn install_bus_error_handler() {
    #[cfg(unix)]
    {
        // SAFETY: a zeroed `sigaction` is a valid value (no flags, empty mask) to fill in; the
        // handler is an `extern "C" fn(c_int)` that only calls async-signal-safe functions;
        // `sigemptyset` and `sigaction` get valid pointers to local values.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_bus_error as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    }
}
