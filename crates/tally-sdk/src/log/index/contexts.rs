//! Contexts in the index (format 2, see [`super::super::record`]): where
//! each segment's context frames are, and the contexts read back, so that
//! a pending record comes with the context it names.
//!
//! Invariants: a segment's context generations are unique (one run of the
//! writer numbers them, and every open starts a new segment); a record
//! whose context frame is missing, corrupt or sealed under a lost key is
//! never returned with another context: it is counted corrupt; the key of
//! the frame a generation is read from (the segment's last for it) is kept
//! while its segment has a pending record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::crypto::KeyId;
use super::super::record::{self, FrameKind, Parsed};
use super::super::LogError;
use super::State;

/// Where a context frame is in its segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContextMeta {
    pub offset: u32,
    pub len: u32,
    pub key: KeyId,
}

/// A segment's context frames, and the contexts already read.
#[derive(Debug, Default)]
pub(crate) struct SegContexts {
    frames: BTreeMap<u32, ContextMeta>,
    read: BTreeMap<u32, Arc<[u8]>>,
}

impl SegContexts {
    /// Notes a context frame found on disk (its context is read on first
    /// use). A later frame of the same generation (stored again after a
    /// key rotation) replaces the earlier: the same bytes, under the
    /// newer key.
    pub(crate) fn found(&mut self, gen: u32, meta: ContextMeta) {
        self.frames.insert(gen, meta);
    }

    /// The keys of the context frames.
    pub(crate) fn keys(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.frames.values().map(|m| m.key)
    }
}

/// A record's payload and the context it names.
pub(crate) type Opened = (Vec<u8>, Option<Arc<[u8]>>);

/// A context frame the writer wrote, to be indexed.
#[derive(Debug, Clone)]
pub(crate) struct WrittenContext {
    pub segment: u64,
    pub offset: u32,
    pub len: u32,
    pub gen: u32,
    pub key: KeyId,
    pub context: Arc<[u8]>,
}

impl State {
    /// Indexes context frames the writer wrote (their contexts are known).
    pub(crate) fn register_contexts(&mut self, written: Vec<WrittenContext>) {
        for w in written {
            let Some(seg) = self.segs.get_mut(&w.segment) else {
                continue;
            };
            seg.contexts.found(
                w.gen,
                ContextMeta {
                    offset: w.offset,
                    len: w.len,
                    key: w.key,
                },
            );
            seg.contexts.read.insert(w.gen, w.context);
        }
    }

    /// The context generation `gen` of segment `sid` names, read and
    /// opened on first use; `None` when it cannot be (missing, corrupt,
    /// key lost).
    pub(crate) fn context(&mut self, sid: u64, gen: u32) -> Result<Option<Arc<[u8]>>, LogError> {
        let Some(seg) = self.segs.get(&sid) else {
            return Ok(None);
        };
        if let Some(c) = seg.contexts.read.get(&gen) {
            return Ok(Some(Arc::clone(c)));
        }
        let Some(meta) = seg.contexts.frames.get(&gen).copied() else {
            return Ok(None);
        };
        let Some(cipher) = self.cipher(meta.key)? else {
            return Ok(None);
        };
        let Some(seg) = self.segs.get_mut(&sid) else {
            return Ok(None);
        };
        if seg.reader.is_none() {
            seg.reader = Some(self.fs.open(&seg.path)?);
        }
        let mut buf = vec![0u8; meta.len as usize];
        let n = match seg.reader.as_ref() {
            Some(r) => r.read_full_at(&mut buf, u64::from(meta.offset))?,
            None => 0,
        };
        let opened = match record::parse(&buf[..n]) {
            Parsed::Frame(f) if f.kind == FrameKind::Context && f.seq == u64::from(gen) => {
                f.open(&cipher)
            }
            _ => None,
        };
        let Some(context) = opened else {
            return Ok(None);
        };
        let context: Arc<[u8]> = Arc::from(context);
        seg.contexts.read.insert(gen, Arc::clone(&context));
        Ok(Some(context))
    }

    /// Keys that the context frames of segments with pending records need
    /// (for each generation, its last frame's).
    pub(crate) fn context_keys(&self) -> BTreeSet<KeyId> {
        self.segs
            .values()
            .filter(|s| s.pending > 0)
            .flat_map(|s| s.contexts.keys())
            .collect()
    }

    /// A pending record's payload and context from its plaintext, by its
    /// segment's format; `None` when it cannot be trusted (no prefix in a
    /// format 2 segment, or a context that cannot be read).
    pub(crate) fn payload_of(
        &mut self,
        sid: u64,
        mut plain: Vec<u8>,
    ) -> Result<Option<Opened>, LogError> {
        let version = self.segs.get(&sid).map_or(0, |s| s.version);
        if version < 2 {
            return Ok(Some((plain, None)));
        }
        let Some((gen, skip)) = record::split_prefix(&plain) else {
            return Ok(None);
        };
        plain.drain(..skip);
        if gen == 0 {
            return Ok(Some((plain, None)));
        }
        Ok(self.context(sid, gen)?.map(|c| (plain, Some(c))))
    }
}
