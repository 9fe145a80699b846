//! The one path every batch takes between a file and the sink: limits, processing, stamping.
//!
//! A batch is made in one of three places: a turn's read, the parser letting out records it held
//! (a multiline record whose `flush_timeout` passed, everything still held when a file is let
//! go), and the limit stage itself (drop mode's summary of what it dropped). Each enters the
//! path here, at the stage after the one that made it, so no batch can go around a stage: a
//! record let out by a timeout is filtered and parsed like one read a moment earlier.
//!
//! Sending is the tailer's (it waits for the budget and keeps turning while it waits); this
//! file never blocks.

use std::sync::Arc;
use std::time::Instant;

use crate::document::Encoder;
use crate::process::Processor;
use crate::record::Batch;
use crate::telemetry::{self, metrics};

use super::limits::Limits;
use super::reader::TailedFile;

/// Where a batch was made, which is where it enters the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A turn that read `bytes` bytes of the file: every stage.
    Read { bytes: usize },
    /// Records the parser held and let out later (a multiline timeout, a file let go): every
    /// stage. Their bytes were counted when they were read; their lines are paid for now.
    Held,
    /// Drop mode's summary, written by the limit stage: the stages after it.
    Summary,
}

/// The stages, with what each needs.
pub struct Stages {
    /// `None` when no limit can apply (no default, no rule, no enrichment for annotations).
    pub limits: Option<Limits>,
    /// `None` when processing cannot change anything (parser none, no rules, no filters, no
    /// enrichment for annotations).
    pub processor: Option<Processor>,
    pub encoder: Arc<Encoder>,
    /// This node's name: part of every record's document id.
    pub node_name: String,
}

impl Stages {
    /// Takes `batch`, made from `f` at `origin`, through the stages it has not been through:
    /// limits, then processing, then the file generation's document id prefix and fragment.
    pub fn prepare(&mut self, f: &mut TailedFile, batch: &mut Batch, origin: Origin) {
        let bytes = match origin {
            Origin::Read { bytes } => Some(bytes),
            Origin::Held => Some(0),
            Origin::Summary => None,
        };
        if let Some(bytes) = bytes {
            telemetry::add(&metrics().records_read, batch.records.len() as u64);
            if let Some(limits) = self.limits.as_mut() {
                limits.after_read(f, batch, bytes, Instant::now());
            }
        }
        if let Some(processor) = self.processor.as_mut() {
            processor.process(&mut f.processing, &f.fragment, &self.encoder, batch);
        }
        f.stamp(batch, &self.node_name);
    }
}
