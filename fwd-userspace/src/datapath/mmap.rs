//! `BPF_F_MMAPABLE` arrays written through a shared mapping: a whole table is a `memcpy`,
//! not one syscall per entry.

use std::{
    os::fd::AsFd as _,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    Pod,
    maps::{Map, MapData},
};
use fwd_common::FwdConfig;

use super::{DatapathError, pins::pin_error};

/// One mmapable array map, mapped for the life of this value.
pub(super) struct MmapArray<T: Pod> {
    /// Holds the map's file descriptor.
    _map: MapData,
    ptr: NonNull<T>,
    len: usize,
    pub(super) name: &'static str,
}

impl<T: Pod> MmapArray<T> {
    pub(super) fn new(map: Map, name: &'static str) -> Result<Self, DatapathError> {
        let Map::Array(data) = map else {
            return Err(DatapathError::MissingMap(name));
        };
        let info = data
            .info()
            .map_err(|source| DatapathError::Map { map: name, source })?;
        let (value_size, len) = (info.value_size() as usize, info.max_entries() as usize);
        // The kernel lays mmapable array elements out at their size rounded up to 8.
        if value_size != size_of::<T>() || !size_of::<T>().is_multiple_of(8) {
            return Err(pin_error(
                std::path::Path::new(name),
                format!(
                    "value size {value_size}, expected {} (a multiple of 8)",
                    size_of::<T>()
                ),
            ));
        }
        let bytes = (len * size_of::<T>()).max(1);
        // SAFETY: a fresh shared mapping of the map's memory; the kernel keeps it valid
        // until munmap (Drop), whatever happens to the file descriptor.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&data.fd().as_fd()),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(pin_error(
                std::path::Path::new(name),
                format!(
                    "mapping the table into memory: {} (the kernel needs BPF_F_MMAPABLE arrays, Linux 5.5+)",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(Self {
            _map: data,
            ptr: NonNull::new(ptr.cast()).expect("mmap returned a valid address"),
            len,
            name,
        })
    }

    /// Entries the array holds.
    pub(super) fn capacity(&self) -> usize {
        self.len
    }

    /// Writes `values` from entry `at` on. The caller makes sure the programs do not read
    /// what is being written (an inactive slot, or entries nothing refers to yet).
    pub(super) fn write(&mut self, at: usize, values: &[T]) -> Result<(), DatapathError> {
        if at + values.len() > self.len {
            return Err(DatapathError::Capacity {
                map: self.name,
                needed: at + values.len(),
                capacity: self.len,
            });
        }
        // SAFETY: in bounds of the mapping (checked above); T is plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.as_ptr().add(at), values.len());
        }
        Ok(())
    }

    pub(super) fn read(&self, at: usize) -> Option<T> {
        // SAFETY: in bounds of the mapping; T is plain data.
        (at < self.len).then(|| unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(at)) })
    }
}

impl MmapArray<FwdConfig> {
    /// The config as the programs see it; its first word read at once.
    pub(super) fn read_config(&self) -> FwdConfig {
        let p = self.ptr.as_ptr();
        // SAFETY: entry 0 of the mapping (the array has one entry, checked by `new`'s size
        // check and the map definition); FwdConfig is align(8), so is its first word.
        unsafe {
            std::ptr::read_volatile(p)
                .with_head(AtomicU64::from_ptr(p.cast::<u64>()).load(Ordering::Acquire))
        }
    }

    /// Writes the config: the settings the programs read one by one (timeouts, sample
    /// budget, generation) first, then the first word (slot, mode, host bits, epoch) with
    /// one 8-byte store, so a packet sees that word old or new, never half of each.
    pub(super) fn write_config(&mut self, config: &FwdConfig) {
        let p = self.ptr.as_ptr();
        // SAFETY: as in `read_config`; this value is the mapping's only writer.
        unsafe {
            let tail = |field: *mut u32, value: u32| field.write_volatile(value);
            tail(&raw mut (*p).generation, config.generation);
            tail(&raw mut (*p).samples_per_second, config.samples_per_second);
            tail(&raw mut (*p).tcp_timeout_s, config.tcp_timeout_s);
            tail(&raw mut (*p).udp_timeout_s, config.udp_timeout_s);
            tail(&raw mut (*p).other_timeout_s, config.other_timeout_s);
            AtomicU64::from_ptr(p.cast::<u64>()).store(config.head(), Ordering::Release);
        }
    }
}

impl<T: Pod> Drop for MmapArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), (self.len * size_of::<T>()).max(1));
        }
    }
}

// SAFETY: the mapping is plain memory owned by this value; `&mut self` guards writes.
unsafe impl<T: Pod> Send for MmapArray<T> {}
// SAFETY: as above; shared access only reads.
unsafe impl<T: Pod> Sync for MmapArray<T> {}
