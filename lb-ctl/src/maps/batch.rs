//! The batch map syscalls aya 0.14 lacks: `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_UPDATE_BATCH`.
//! Reading a 65,536-entry array one lookup per entry costs a syscall each (a tenth of a
//! second); one batch call per 8,192 entries costs milliseconds. The kernel still copies entry
//! by entry (a few hundred ns each on a machine with the usual speculation mitigations), so
//! callers read only the ranges they need.

use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::{Context as _, Result};
use aya::maps::{IterableMap as _, MapData};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of the kernel's `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The `bpf(cmd, attr)` syscall for a batch command.
///
/// # Safety
/// The pointers in `attr` must be valid for `attr.count` keys and values for the call.
unsafe fn batch(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: the caller vouches for the buffers; attr itself is valid for its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads `count` consecutive entries of an array map from index `start` with one
/// BPF_MAP_LOOKUP_BATCH call per chunk instead of one syscall per entry (a 65,536-entry
/// array: milliseconds instead of a tenth of a second). Entries past the array's end are not
/// returned.
pub fn array_batch<T: aya::Pod + Default>(
    map: &aya::maps::Array<MapData, T>,
    start: u32,
    count: u32,
) -> Result<Vec<T>> {
    let fd = raw_fd(map.map());
    let mut out: Vec<T> = Vec::with_capacity(count as usize);
    // The kernel resumes after the key in `in_batch`: start - 1, or from the first key.
    let mut prev: u32 = start.wrapping_sub(1);
    let mut next: u32 = 0;
    let mut first = start == 0;
    while (out.len() as u32) < count {
        let want = (count - out.len() as u32).min(8192);
        let mut keys = vec![0u32; want as usize];
        let mut values = vec![T::default(); want as usize];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &prev as *const u32 as u64 },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `want` keys and values that live across the call.
        let rc = unsafe { batch(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let done = matches!(&rc, Err(e) if e.raw_os_error() == Some(libc::ENOENT));
        if !done {
            rc.context("BPF_MAP_LOOKUP_BATCH")?;
        }
        values.truncate(attr.count as usize);
        out.extend(values);
        if done || attr.count == 0 {
            break;
        }
        prev = next;
        first = false;
    }
    out.truncate(count as usize);
    Ok(out)
}

/// Writes `values` to consecutive entries of an array map from index `start` with one
/// BPF_MAP_UPDATE_BATCH call per 8,192 entries instead of one syscall per entry: a service's
/// whole lookup table in one call.
pub fn array_update_batch<T: aya::Pod>(
    map: &aya::maps::Array<MapData, T>,
    start: u32,
    values: &[T],
) -> Result<()> {
    let fd = raw_fd(map.map());
    for (n, chunk) in values.chunks(8192).enumerate() {
        let first = start + (n * 8192) as u32;
        let keys: Vec<u32> = (first..first + chunk.len() as u32).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at `count` keys and values that live across the call.
        unsafe { batch(BPF_MAP_UPDATE_BATCH, &mut attr) }.with_context(|| {
            format!(
                "BPF_MAP_UPDATE_BATCH of {} entries at {first} ({} written)",
                chunk.len(),
                attr.count
            )
        })?;
    }
    Ok(())
}

/// Every entry of a hash map, with BPF_MAP_LOOKUP_BATCH: one syscall per 1,024 entries
/// instead of two per entry (`get_next_key` and `lookup`) as iterating does.
pub fn hash_batch<K: aya::Pod, V: aya::Pod>(
    map: &aya::maps::HashMap<MapData, K, V>,
) -> Result<Vec<(K, V)>> {
    let fd = raw_fd(map.map());
    let mut out = Vec::new();
    // The kernel's resume token for a hash map is a bucket index (u32).
    let mut token: u32 = 0;
    let mut next: u32 = 0;
    let mut first = true;
    let mut chunk: usize = 1024;
    loop {
        let mut keys = vec![zeroed::<K>(); chunk];
        let mut values = vec![zeroed::<V>(); chunk];
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token as *const u32 as u64
            },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `chunk` keys and values that live across the call.
        let rc = unsafe { batch(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        match &rc {
            // One bucket holds more entries than `chunk`: ask again with room for it.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && chunk < (1 << 20) => {
                chunk *= 4;
                continue;
            }
            _ => {}
        }
        let done = matches!(&rc, Err(e) if e.raw_os_error() == Some(libc::ENOENT));
        if !done {
            rc.context("BPF_MAP_LOOKUP_BATCH of a hash map")?;
        }
        let n = attr.count as usize;
        out.extend(keys.into_iter().zip(values).take(n));
        if done {
            return Ok(out);
        }
        token = next;
        first = false;
    }
}

/// A zeroed `T`, as a buffer the kernel fills.
fn zeroed<T: aya::Pod>() -> T {
    // SAFETY: a Pod type is plain data: every bit pattern, zeros included, is a valid value.
    unsafe { std::mem::zeroed() }
}

fn raw_fd(map: &MapData) -> RawFd {
    map.fd().as_fd().as_raw_fd()
}
