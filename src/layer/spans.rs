//! A cache of decoded spans of compressed layers, bounded in bytes and shared by the
//! FUSE threads, so that a file read sequentially in kernel-sized pieces decodes each
//! span of its layer once, not once per piece.
//!
//! A span is the uncompressed stretch between two decompression checkpoints (about
//! 1 MiB). The cache holds one slot per span; the first thread to want a span decodes
//! it while holding that slot alone, so other threads wanting the same span wait for
//! that one decode, and threads wanting other spans are not held up at all. Decoding
//! happens outside the cache's own lock.

use lru::LruCache;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A span of one layer: (the layer's cache id, span number).
type Key = (u64, usize);
type Slot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

pub struct SpanCache {
    limit: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    slots: LruCache<Key, (Slot, u64)>,
    bytes: u64,
}

impl SpanCache {
    /// A cache that holds at most `limit` bytes of decoded data (at least one span).
    pub fn new(limit: u64) -> SpanCache {
        SpanCache { limit, inner: Mutex::new(Inner { slots: LruCache::unbounded(), bytes: 0 }) }
    }

    /// The bytes the cache may hold.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// A fresh id for a layer's spans.
    pub fn layer_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Span `span` of layer `layer` (`len` bytes once decoded), decoding it with
    /// `decode` if it is not cached. A failed decode caches nothing.
    pub fn get(
        &self,
        layer: u64,
        span: usize,
        len: u64,
        decode: impl FnOnce() -> io::Result<Vec<u8>>,
    ) -> io::Result<Arc<Vec<u8>>> {
        let slot = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            match inner.slots.get(&(layer, span)) {
                Some((slot, _)) => Arc::clone(slot),
                None => {
                    let slot: Slot = Arc::default();
                    inner.slots.put((layer, span), (Arc::clone(&slot), len));
                    inner.bytes += len;
                    // Evicting a slot another thread is filling only drops it from the
                    // cache; that thread still gets its bytes.
                    while inner.bytes > self.limit && inner.slots.len() > 1 {
                        if let Some((_, (_, n))) = inner.slots.pop_lru() {
                            inner.bytes -= n;
                        }
                    }
                    slot
                }
            }
        };
        let mut data = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = data.as_ref() {
            return Ok(Arc::clone(d));
        }
        match decode() {
            Ok(bytes) => {
                let bytes = Arc::new(bytes);
                *data = Some(Arc::clone(&bytes));
                Ok(bytes)
            }
            Err(e) => {
                drop(data);
                let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((_, n)) = inner.slots.pop(&(layer, span)) {
                    inner.bytes -= n;
                }
                Err(e)
            }
        }
    }

    /// Is span `span` of layer `layer` cached (or being decoded)?
    pub fn contains(&self, layer: u64, span: usize) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).slots.contains(&(layer, span))
    }

    /// Bytes of decoded data accounted for now.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_span_once_and_stays_within_its_bound() {
        let cache = SpanCache::new(3000);
        let decodes = AtomicU64::new(0);
        let get = |span: usize| {
            cache
                .get(7, span, 1000, || {
                    decodes.fetch_add(1, Ordering::SeqCst);
                    Ok(vec![span as u8; 1000])
                })
                .unwrap()
        };
        assert_eq!(get(0)[0], 0);
        assert_eq!(get(0)[999], 0);
        assert_eq!(decodes.load(Ordering::SeqCst), 1);
        for s in 1..10 {
            assert_eq!(get(s)[0], s as u8);
        }
        assert!(cache.bytes() <= 3000, "{} bytes cached", cache.bytes());
        get(0);
        assert_eq!(decodes.load(Ordering::SeqCst), 11, "span 0 was evicted and decoded again");
    }

    #[test]
    fn a_failed_decode_is_not_cached() {
        let cache = SpanCache::new(1 << 20);
        assert!(cache.get(1, 0, 10, || Err(io::Error::other("bad layer"))).is_err());
        assert_eq!(cache.bytes(), 0);
        assert_eq!(&cache.get(1, 0, 3, || Ok(vec![1, 2, 3])).unwrap()[..], &[1, 2, 3]);
    }

    #[test]
    fn threads_wanting_one_span_share_one_decode() {
        let cache = Arc::new(SpanCache::new(1 << 20));
        let decodes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, decodes) = (Arc::clone(&cache), Arc::clone(&decodes));
                std::thread::spawn(move || {
                    cache
                        .get(3, 5, 4, || {
                            decodes.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok(vec![9; 4])
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(&t.join().unwrap()[..], &[9, 9, 9, 9]);
        }
        assert_eq!(decodes.load(Ordering::SeqCst), 1);
    }
}
