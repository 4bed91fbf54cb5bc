//! A cache of large freed blocks in front of a global allocator, for programs that embed the
//! pipeline (the `fenestra` binary uses it over mimalloc).
//!
//! A streaming run allocates big buffers on one thread and frees them on another all the time:
//! a decoded input chunk (~20 MB) on the reader's thread, freed after assignment on the caller's;
//! window rows on the store's thread, freed by the output writer. Nearly all of a run's
//! allocated bytes are in such blocks (Q2 of the peer workload, hop 10 s / 1 s over 5M events:
//! ~620 of ~680 MB in blocks of 256 KiB or more). mimalloc keeps freed memory, but did not hand
//! these blocks out again soon enough: that run touched 243 MB of memory for a live peak of
//! 129 MB, every new page zeroed by the kernel on its first touch (~20% of the run's CPU time
//! went to page faults).
//!
//! [`LargeBlocks`] rounds every allocation of at least [`LargeBlocks::MIN`] bytes up to one of
//! four size classes per power of two and keeps freed blocks per class (up to
//! [`LargeBlocks::CACHED`] bytes in all), whatever thread freed them, for the next allocation of
//! that class or of one of the two classes below it, on any thread. A block's class is written
//! in a 64-byte header in front of it; a `realloc` that still fits the block (and is at most two
//! classes smaller) returns it as it is. Smaller allocations and alignments above 64 bytes go
//! straight to the inner allocator.
//!
//! Measured on the peer workload (5M events, 12 alternating runs each): Q2 page faults
//! 59.9k -> 54.6k, peak RSS 243 -> 219 MB, wall 0.384 -> 0.367 s; Q3 (sessions) peak RSS 197 ->
//! 160 MB, wall 0.410 -> 0.386 s; Q1 peak RSS 187 -> 159 MB at the same wall time. Taking any
//! larger cached block instead of at most two classes larger was no better.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;
use std::sync::Mutex;

/// log2 of the smallest cached size.
const MIN_BITS: u32 = 18;
/// log2 past the largest cached size.
const MAX_BITS: u32 = 40;
/// Size classes: four per power of two from 2^18 up to 2^40 bytes.
const CLASSES: usize = (MAX_BITS - MIN_BITS) as usize * 4;
/// The alignment of every cached block, and the bytes in front of it that hold its class.
const ALIGN: usize = 64;
/// Classes above the one asked for that a freed block may be taken from (up to ~1.7 times the
/// size): a stream's buffers vary a little in size from one batch to the next.
const LARGER: usize = 2;

/// Freed blocks of one class (each pointing at its header).
struct Free(Vec<NonNull<u8>>);

// SAFETY: the pointers are blocks nobody else holds; the allocator may hand them to any thread.
unsafe impl Send for Free {}

struct Cache {
    free: [Free; CLASSES],
    bytes: usize,
}

/// A global allocator that caches large freed blocks in front of `A` (see the module docs).
pub struct LargeBlocks<A> {
    inner: A,
    cache: Mutex<Cache>,
}

impl<A> LargeBlocks<A> {
    /// Allocations of at least this many bytes are rounded to a class and cached when freed.
    pub const MIN: usize = 1 << MIN_BITS;
    /// Bytes of freed blocks kept at most; beyond it, freed blocks go back to the inner allocator.
    pub const CACHED: usize = 256 << 20;
}

// A class's free list grows while the cache's lock is held, through this allocator: it must stay
// a small allocation (which never takes the lock) however many blocks the cache holds.
const _: () = assert!(
    LargeBlocks::<()>::CACHED / LargeBlocks::<()>::MIN * std::mem::size_of::<NonNull<u8>>() < LargeBlocks::<()>::MIN
);

impl<A> LargeBlocks<A> {
    /// The cache over `inner`.
    pub const fn new(inner: A) -> Self {
        const EMPTY: Free = Free(Vec::new());
        LargeBlocks {
            inner,
            cache: Mutex::new(Cache {
                free: [EMPTY; CLASSES],
                bytes: 0,
            }),
        }
    }

    /// Bytes held in freed blocks now (for tests and diagnostics).
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.bytes)
    }
}

/// The class of an allocation of `layout`, or `None` when it is not cached (then it has no
/// header either: the layout alone decides, so `dealloc` knows).
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if size < 1 << MIN_BITS || layout.align() > ALIGN || size > 1 << (MAX_BITS - 1) {
        return None;
    }
    // rounded up to a quarter of the power of two below it
    let k = usize::BITS - 1 - size.leading_zeros();
    let step = 1usize << (k - 2);
    let rounded = size.div_ceil(step) * step;
    let k = usize::BITS - 1 - rounded.leading_zeros();
    let j = (rounded - (1 << k)) >> (k - 2);
    Some((k - MIN_BITS) as usize * 4 + j)
}

/// The bytes a block of class `idx` holds for its caller.
fn class_size(idx: usize) -> usize {
    let k = MIN_BITS as usize + idx / 4;
    (1 << k) + (idx % 4) * (1 << (k - 2))
}

/// The layout a block of class `idx` has in the inner allocator: its header, then its bytes.
fn block_layout(idx: usize) -> Layout {
    // SAFETY: a power-of-two alignment and a size far below `isize::MAX`.
    unsafe { Layout::from_size_align_unchecked(ALIGN + class_size(idx), ALIGN) }
}

impl<A: GlobalAlloc> LargeBlocks<A> {
    /// A freed block of class `idx` or a little larger, as its header.
    fn take(&self, idx: usize) -> Option<*mut u8> {
        let mut c = self.cache.lock().ok()?;
        let c = &mut *c;
        let (got, p) = (idx..(idx + LARGER + 1).min(CLASSES)).find_map(|i| c.free[i].0.pop().map(|p| (i, p)))?;
        c.bytes -= class_size(got);
        Some(p.as_ptr())
    }

    /// Keeps a freed block (`head`: its header), or hands it back to the inner allocator.
    ///
    /// # Safety
    /// `head` is the header of a live block of this allocator.
    unsafe fn keep(&self, head: *mut u8) {
        // SAFETY: the header holds the block's class.
        let idx = unsafe { head.cast::<usize>().read() };
        let size = class_size(idx);
        if let (Ok(mut c), Some(p)) = (self.cache.lock(), NonNull::new(head))
            && c.bytes + size <= Self::CACHED
        {
            c.bytes += size;
            c.free[idx].0.push(p);
            return;
        }
        // SAFETY: the block came from the inner allocator with this layout.
        unsafe { self.inner.dealloc(head, block_layout(idx)) }
    }

    /// A block of class `idx` (zeroed up to `zero` bytes), as its caller's pointer.
    unsafe fn alloc_class(&self, idx: usize, zero: Option<usize>) -> *mut u8 {
        let head = match self.take(idx) {
            Some(head) => {
                if let Some(n) = zero {
                    // SAFETY: the block holds at least `class_size(idx) >= n` bytes.
                    unsafe { std::ptr::write_bytes(head.add(ALIGN), 0, n) };
                }
                head
            }
            None => {
                let l = block_layout(idx);
                let head = unsafe {
                    if zero.is_some() {
                        self.inner.alloc_zeroed(l)
                    } else {
                        self.inner.alloc(l)
                    }
                };
                if head.is_null() {
                    return head;
                }
                // SAFETY: the header is the block's first `ALIGN` bytes.
                unsafe { head.cast::<usize>().write(idx) };
                head
            }
        };
        // SAFETY: the caller's bytes follow the header, inside the block.
        unsafe { head.add(ALIGN) }
    }
}

// SAFETY: a cached block is allocated and freed by the inner allocator with one layout, its
// header recording which; it is handed out once until it is freed again. Whether a block is
// cached depends on the caller's layout alone, and a block of a class holds at least the bytes
// of every layout of that class.
unsafe impl<A: GlobalAlloc> GlobalAlloc for LargeBlocks<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            None => unsafe { self.inner.alloc(layout) },
            Some(idx) => unsafe { self.alloc_class(idx, None) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            None => unsafe { self.inner.alloc_zeroed(layout) },
            Some(idx) => unsafe { self.alloc_class(idx, Some(layout.size())) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class(layout) {
            None => unsafe { self.inner.dealloc(ptr, layout) },
            Some(_) => unsafe { self.keep(ptr.sub(ALIGN)) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (of the layout): `realloc`'s contract keeps the alignment, and `new_size`
        // does not overflow when rounded up to it.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            (None, None) => return unsafe { self.inner.realloc(ptr, layout, new_size) },
            (Some(_), Some(want)) => {
                // SAFETY: a cached block has its header in front.
                let held = unsafe { ptr.sub(ALIGN).cast::<usize>().read() };
                // in place while it fits and is not much too big
                if want <= held && want + LARGER >= held {
                    return ptr;
                }
            }
            _ => {}
        }
        let p = unsafe { self.alloc(new) };
        if !p.is_null() {
            // SAFETY: both blocks hold at least the smaller size, and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn l(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn classes_are_quarters_of_powers_of_two_and_hold_their_sizes() {
        assert_eq!(class(l((1 << 18) - 1)), None);
        assert_eq!(class(l(1 << 18)), Some(0));
        assert_eq!(class(l((1 << 18) + 1)), Some(1));
        assert_eq!(class_size(1), 5 << 16);
        assert_eq!(class(l(7 << 16)), Some(3));
        assert_eq!(class(l((7 << 16) + 1)), Some(4));
        assert_eq!(class_size(4), 1 << 19);
        assert_eq!(class(l(20_000_000)), Some((24 - 18) * 4 + 1));
        assert_eq!(class_size((24 - 18) * 4 + 1), 20 << 20);
        assert_eq!(class(Layout::from_size_align(1 << 21, 4096).unwrap()), None);
        assert_eq!(class(l(1 << 39)), Some(CLASSES - 4));
        assert_eq!(class(l((1 << 39) + 1)), None);
        let mut last = 0;
        for s in (1usize << 18..1 << 26).step_by(77_777) {
            let idx = class(l(s)).unwrap();
            let size = class_size(idx);
            assert!(size >= s && size < s + s / 4 + 1, "{s} -> {size}");
            assert!(idx >= last, "classes grow with the size");
            last = idx;
        }
    }

    fn fill(p: *mut u8, n: usize) {
        let bytes = unsafe { std::slice::from_raw_parts_mut(p, n) };
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
    }

    fn filled(p: *const u8, n: usize) -> bool {
        let bytes = unsafe { std::slice::from_raw_parts(p, n) };
        bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8)
    }

    #[test]
    fn freed_blocks_are_reused_across_threads_and_keep_their_contents_on_realloc() {
        let a = std::sync::Arc::new(LargeBlocks::new(System));
        // a 3 MB class block
        let big = Layout::from_size_align((3 << 20) - 100_000, 16).unwrap();
        let p = unsafe { a.alloc(big) };
        assert_eq!(p as usize % 64, 0, "64-byte aligned");
        fill(p, big.size());
        // freed on another thread, reused here, zeroed when asked
        let (b, pu) = (a.clone(), p as usize);
        std::thread::spawn(move || unsafe { b.dealloc(pu as *mut u8, big) })
            .join()
            .unwrap();
        assert_eq!(a.cached_bytes(), 3 << 20);
        let q = unsafe { a.alloc_zeroed(big) };
        assert_eq!(q, p, "the freed block of the class");
        assert_eq!(a.cached_bytes(), 0);
        let bytes = unsafe { std::slice::from_raw_parts(q, big.size()) };
        assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed zeroes a reused block");
        fill(q, big.size());
        // a little larger, within the block: in place
        let r = unsafe { a.realloc(q, big, 3 << 20) };
        assert_eq!(r, q);
        // much larger: a copy, the old block kept
        let grown = Layout::from_size_align(3 << 20, 16).unwrap();
        let s = unsafe { a.realloc(r, grown, 9 << 20) };
        assert_ne!(s, r);
        assert!(filled(s, big.size()));
        assert_eq!(a.cached_bytes(), 3 << 20, "the old block is kept");
        // a request a class or two smaller takes the kept block
        let smaller = Layout::from_size_align(5 << 19, 16).unwrap();
        let t = unsafe { a.alloc(smaller) };
        assert_eq!(t, q);
        unsafe { a.dealloc(t, smaller) };
        // down to a small size: a copy through the inner allocator
        let u = unsafe { a.realloc(s, Layout::from_size_align(9 << 20, 16).unwrap(), 1000) };
        assert!(filled(u, 1000));
        unsafe { a.dealloc(u, Layout::from_size_align(1000, 16).unwrap()) };
        // 9 MB went to the 10 MB class
        assert_eq!(a.cached_bytes(), (3 << 20) + (10 << 20));
    }

    #[test]
    fn the_cache_is_bounded() {
        let a = LargeBlocks::new(System);
        let big = l(100 << 20);
        let ps: Vec<_> = (0..4).map(|_| unsafe { a.alloc(big) }).collect();
        for p in ps {
            unsafe { a.dealloc(p, big) };
        }
        let size = class_size(class(big).unwrap());
        assert_eq!(size, 112 << 20);
        assert_eq!(
            a.cached_bytes(),
            2 * size,
            "two of the four blocks are kept, the rest freed"
        );
    }
}
