//! Reading a whole array map as one memory copy: `BACKENDS` is created `BPF_F_MMAPABLE`, so
//! the control plane maps it read-only and copies its slots out, instead of asking the kernel
//! to copy 65,536 entries one by one through a batch call.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, IterableMap as _, MapData};

/// The slots of `map`, or `None` if the map cannot be mapped (created without
/// `BPF_F_MMAPABLE`, e.g. pinned by an older lb-ctl): the caller then reads it with a batch.
pub fn array_copy<T: aya::Pod>(map: &Array<MapData, T>) -> Result<Option<Vec<T>>> {
    let len = map.len() as usize;
    // The kernel stores array values at a stride of their size rounded up to 8 bytes.
    let stride = std::mem::size_of::<T>().next_multiple_of(8);
    let bytes = len * stride;
    if bytes == 0 {
        return Ok(Some(Vec::new()));
    }
    let fd = map.map().fd().as_fd().as_raw_fd();
    // SAFETY: a fresh read-only shared mapping of the map's value area, `bytes` long (the
    // kernel refuses a longer one); nothing else aliases it and it is unmapped below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            // Not an mmapable map.
            Some(libc::EINVAL) | Some(libc::ENODEV) | Some(libc::EPERM) => Ok(None),
            _ => Err(err).context("mapping an array map into memory"),
        };
    }
    let out = (0..len)
        .map(|i| {
            // SAFETY: slot i starts at i * stride < bytes and holds a T (the map's value
            // type); read_unaligned because nothing promises T's alignment at the stride, and
            // a Pod T is valid for any bit pattern (the data path may be writing it
            // meanwhile: a torn read is a value of the type, and the next read corrects it).
            unsafe { std::ptr::read_unaligned(base.cast::<u8>().add(i * stride).cast::<T>()) }
        })
        .collect();
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(base, bytes) };
    Ok(Some(out))
}
