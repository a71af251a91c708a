//! A decoder shard: one thread owning one [`ShardDecoder`] (the template state of its
//! exporters), so decoding takes no locks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::batch::DatagramBatch;
use super::control::ShardRequest;
use crate::clock::now_ns;
use crate::decode::{FlowRecord, ShardDecoder};
use crate::metrics::{LogLimiter, Metrics};
use crate::output::{BatchPool, EncodedBatch, Encoding, Fanout};

pub struct Shard {
    pub index: usize,
    pub decoder: ShardDecoder,
    pub rx: Receiver<DatagramBatch>,
    /// Template export/import requests (see [`super::control::TemplateControl`]).
    pub requests: Receiver<ShardRequest>,
    /// Where emptied batches go back to the receive threads.
    pub recycle: Sender<DatagramBatch>,
    pub fanout: Fanout,
    pub metrics: Arc<Metrics>,
    pub expire_every: Duration,
    /// Rung (never blocking) after a batch that carried templates or options data, so the
    /// template reporter asks for changes at once rather than at its next period.
    pub doorbell: Sender<()>,
    /// The encodings the outputs use (each batch is encoded once in each).
    pub encodings: Vec<Encoding>,
    /// Buffers of the batches the outputs are done with, filled again here.
    pub batches: BatchPool,
}

/// Records decoded before they are encoded: a datagram batch's records all at once (up to
/// 64 × 4 datagrams × 30 records of ~700 bytes) would leave the caches before they are read back.
const ENCODE_EVERY: usize = 256;

/// For the first size of a batch's encoding (NetFlow v9/IPFIX datagrams carry 20–30).
const TYPICAL_RECORDS_PER_DATAGRAM: usize = 24;

/// Encoded batches' buffers each shard keeps for reuse (beyond them, dropped batches are freed).
pub const POOLED_BATCHES: usize = 32;

impl Shard {
    /// Runs until every receive thread has dropped its sender and the queue is drained.
    pub fn run(mut self) {
        let mut records = Vec::new();
        let errors = LogLimiter::default();
        let mut requests = self.requests.clone();
        let mut next_expire = Instant::now() + self.expire_every;
        loop {
            let idle = next_expire.saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(self.rx) -> batch => match batch {
                    Ok(mut batch) => {
                        self.decode(&batch, &mut records, &errors);
                        batch.clear();
                        // The pool being full only means enough batches are in circulation.
                        let _ = self.recycle.try_send(batch);
                    }
                    Err(_) => break,
                },
                recv(requests) -> request => match request {
                    Ok(request) => self.serve(request),
                    Err(_) => requests = crossbeam_channel::never(),
                },
                default(idle) => {}
            }
            if Instant::now() >= next_expire {
                self.decoder.expire(now_ns());
                self.metrics
                    .publish_decoder(self.index, self.decoder.stats());
                next_expire = Instant::now() + self.expire_every;
            }
        }
        self.metrics
            .publish_decoder(self.index, self.decoder.stats());
    }

    fn serve(&mut self, request: ShardRequest) {
        // A caller that timed out has dropped its receiver; the answer is then moot.
        match request {
            ShardRequest::Export { exporter, reply } => {
                let _ = reply.send(self.decoder.export_templates(exporter));
            }
            ShardRequest::Import {
                exporter,
                templates,
                reply,
            } => {
                let imported = self
                    .decoder
                    .import_templates(exporter, &templates)
                    .map(|_| ());
                let ok = imported.is_ok();
                let _ = reply.send(imported);
                if ok {
                    // Data that beat the templates here decodes now, not at the next template.
                    let mut records = Vec::new();
                    self.decoder.release_held(exporter, &mut records);
                    let oldest = records.iter().map(|r| r.time_received_ns).min();
                    self.emit(&mut records, oldest.unwrap_or(0));
                }
            }
            ShardRequest::Changed { reply } => {
                let _ = reply.send(self.decoder.take_changed_templates());
            }
        }
    }

    fn decode(
        &mut self,
        batch: &DatagramBatch,
        records: &mut Vec<FlowRecord>,
        errors: &LogLimiter,
    ) {
        let learned = |s: &crate::decode::DecodeStats| {
            s.templates_received + s.templates_withdrawn + s.options_records
        };
        let learned_before = learned(self.decoder.stats());
        let mut encoded = self.take_batches(batch.len() * TYPICAL_RECORDS_PER_DATAGRAM);
        for d in batch.iter() {
            // Errors are counted by the decoder (sluice_peer_decode_errors_total); records
            // decoded before the error stay in `records`.
            if let Err(error) = self
                .decoder
                .decode(d.exporter, d.received_ns, d.data, records)
                && errors.allow()
            {
                tracing::warn!(
                    shard = self.index,
                    exporter = %d.exporter,
                    %error,
                    "malformed datagram (counted in sluice_peer_decode_errors_total)"
                );
            }
            if records.len() >= ENCODE_EVERY {
                self.encode(records, &mut encoded);
            }
        }
        if learned(self.decoder.stats()) != learned_before {
            // Full means a ring is already pending.
            let _ = self.doorbell.try_send(());
        }
        self.encode(records, &mut encoded);
        let oldest = batch.iter().map(|d| d.received_ns).min().unwrap_or(0);
        self.send(encoded, oldest);
    }

    /// Counts `records` and hands them to the outputs, leaving `records` empty. `oldest_ns`:
    /// when the oldest of their datagrams was received.
    fn emit(&mut self, records: &mut Vec<FlowRecord>, oldest_ns: u64) {
        let mut encoded = self.take_batches(records.len());
        self.encode(records, &mut encoded);
        self.send(encoded, oldest_ns);
    }

    /// An empty batch for each encoding the outputs use (none without outputs), with room for
    /// `records` records.
    fn take_batches(&self, records: usize) -> Vec<EncodedBatch> {
        self.encodings
            .iter()
            .map(|encoding| self.batches.take(encoding, records))
            .collect()
    }

    /// Counts `records`, appends them to each of `encoded` in its encoding and empties `records`.
    fn encode(&mut self, records: &mut Vec<FlowRecord>, encoded: &mut [EncodedBatch]) {
        self.metrics
            .records
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for batch in encoded.iter_mut() {
            for record in records.iter() {
                batch.push_record(record);
            }
        }
        records.clear();
    }

    /// Hands the encoded batches (empty ones are skipped) to the outputs.
    fn send(&self, mut encoded: Vec<EncodedBatch>, oldest_ns: u64) {
        for batch in &mut encoded {
            batch.set_received_ns(oldest_ns);
        }
        self.fanout.send_all(encoded);
    }
}
