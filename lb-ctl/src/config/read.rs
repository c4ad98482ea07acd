//! Reading a service file without trusting what the path names: only a regular file (after
//! symlinks) is read, never a FIFO, device, socket or directory, and never more than
//! [`MAX_FILE_BYTES`]. The file is opened non-blocking, so a FIFO with no writer does not hang
//! the caller, and checked with `fstat` on the opened descriptor, so what is read is what was
//! checked.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use super::{ConfigError, Diagnostic};

/// The largest service file read: 16 MiB. A file of 1000 services of 16 backends each is about
/// 800 KB, so this leaves room for comments and checks twenty times over.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A service file as read: its text and the metadata of the descriptor it was read from.
#[derive(Debug)]
pub struct FileText {
    pub text: String,
    pub meta: Metadata,
}

/// Reads the service file at `path` (see the module doc). Every refusal is a [`ConfigError`]
/// with one diagnostic of line 0 that says what to do.
pub fn read(path: &Path) -> Result<FileText, ConfigError> {
    let fail = |message: String| whole_file_error(path, message);
    let mut file = open(path).map_err(fail)?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read the file's metadata (fstat): {e}")))?;
    if let Some(kind) = not_regular(&meta) {
        return Err(fail(format!(
            "is {kind}, not a regular file; give the path of a service file (a FIFO, device, \
             socket or directory is never read)"
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail(too_large(meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte more than the limit tells a file that grew past it while being read.
    (&mut file)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(too_large(bytes.len() as u64)));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError {
            diagnostics: vec![Diagnostic {
                file: path.display().to_string(),
                line,
                field: String::new(),
                message: format!(
                    "the file is not UTF-8 text (invalid byte at offset {at}); save it as UTF-8"
                ),
            }],
        }
    })?;
    Ok(FileText { text, meta })
}

fn open(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // open(2) on a UNIX socket.
            Some(libc::ENXIO) => "is a socket (or a device that is not there), not a regular \
                                  file; give the path of a service file"
                .to_string(),
            _ if e.kind() == ErrorKind::NotFound => {
                format!("cannot read the file: {e}; check the path")
            }
            _ => format!("cannot read the file: {e}"),
        })
}

/// What the file is when it is not a regular file.
fn not_regular(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("of an unknown file type")
    }
}

fn too_large(len: u64) -> String {
    format!(
        "the file is larger than {MAX_FILE_BYTES} bytes (16 MiB, the limit; {len} bytes or more \
         were found); a service file of 1000 services x 16 backends is under 1 MB: check that \
         this is the right file"
    )
}

fn whole_file_error(path: &Path, message: String) -> ConfigError {
    ConfigError {
        diagnostics: vec![Diagnostic {
            file: path.display().to_string(),
            line: 0,
            field: String::new(),
            message,
        }],
    }
}
