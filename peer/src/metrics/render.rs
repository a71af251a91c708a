//! The Prometheus text exposition of [`Metrics`].

use std::sync::atomic::Ordering::Relaxed;

use sluice_common::prom::Exposition;

use super::drop_reason::DropReason;
use super::output::OutputStats;
use super::registry::{MAX_EXPORTER_LABELS, Metrics, PROTOCOLS, lock};

impl Metrics {
    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut p = Exposition::default();
        let peer = self.peer_metrics();
        p.gauge(
            "sluice_peer_start_time_seconds",
            "Process start, Unix seconds.",
            peer.start_time_unix_s,
        );
        p.counter(
            "sluice_peer_input_datagrams_total",
            "UDP datagrams received.",
            self.datagrams.load(Relaxed),
        );
        p.counter(
            "sluice_peer_input_bytes_total",
            "UDP payload bytes received.",
            self.bytes.load(Relaxed),
        );
        p.gauge(
            "sluice_peer_input_datagrams_per_second",
            "Datagrams received per second.",
            peer.input_pps,
        );
        p.counter(
            "sluice_peer_receive_errors_total",
            "recvmmsg failures.",
            self.receive_errors.load(Relaxed),
        );
        p.counter(
            "sluice_peer_flows_total",
            "Flow records produced.",
            self.records.load(Relaxed),
        );
        p.gauge(
            "sluice_peer_flows_per_second",
            "Flow records produced per second.",
            peer.flows_per_s,
        );

        p.family(
            "sluice_peer_drops_total",
            "counter",
            "Datagrams dropped before decoding, by reason.",
        );
        for reason in DropReason::ALL {
            p.sample(
                "sluice_peer_drops_total",
                &[("reason", reason.as_str())],
                self.drops(reason),
            );
        }
        p.family(
            "sluice_peer_exporter_drops_total",
            "counter",
            "Datagrams dropped before decoding, by exporter and reason.",
        );
        let mut drops: Vec<_> = lock(&self.drops).iter().map(|(k, v)| (*k, *v)).collect();
        drops.sort();
        for ((reason, exporter), n) in drops {
            let exporter = exporter.map_or_else(|| "other".to_owned(), |e| e.to_string());
            p.sample(
                "sluice_peer_exporter_drops_total",
                &[("exporter", &exporter), ("reason", reason.as_str())],
                n,
            );
        }
        p.family(
            "sluice_peer_kernel_drops_total",
            "counter",
            "Datagrams the kernel dropped on a receive socket (SO_RXQ_OVFL).",
        );
        for s in lock(&self.sockets).iter() {
            p.sample(
                "sluice_peer_kernel_drops_total",
                &[
                    ("socket", &s.local.to_string()),
                    ("index", &s.index.to_string()),
                ],
                s.kernel_drops.load(Relaxed),
            );
        }
        p.counter(
            "sluice_peer_all_drops_total",
            "Everything dropped: kernel, queues, outputs.",
            self.total_drops(),
        );

        self.render_decoders(&mut p);
        self.render_outputs(&mut p);

        p.gauge(
            "sluice_peer_host_cpu_percent",
            "Host CPU load.",
            peer.cpu_load_pct,
        );
        p.gauge(
            "sluice_peer_host_memory_used_percent",
            "Host memory in use.",
            peer.mem_used_pct,
        );
        p.gauge(
            "sluice_peer_process_cpu_percent",
            "This process's CPU use (100 = one core).",
            peer.process_cpu_pct,
        );
        p.gauge(
            "sluice_peer_process_resident_memory_bytes",
            "This process's resident memory.",
            peer.process_mem_bytes,
        );
        p.into_string()
    }

    fn render_decoders(&self, p: &mut Exposition) {
        let d = self.decode_totals();
        p.gauge(
            "sluice_peer_shards",
            "Decoder shards.",
            lock(&self.decoders).len(),
        );
        for (name, help, per) in [
            (
                "sluice_peer_decoded_datagrams_total",
                "Datagrams decoded, by protocol.",
                &d.datagrams,
            ),
            (
                "sluice_peer_decoded_records_total",
                "Flow records decoded, by protocol.",
                &d.records,
            ),
        ] {
            p.family(name, "counter", help);
            for proto in PROTOCOLS {
                p.sample(name, &[("protocol", proto.as_str())], per.get(proto));
            }
        }
        let name = "sluice_peer_decode_errors_total";
        p.family(name, "counter", "Malformed datagrams, by kind.");
        for (kind, n) in [
            ("unknown_version", d.errors.unknown_version),
            ("truncated", d.errors.truncated),
            ("bad_length", d.errors.bad_length),
            ("bad_template", d.errors.bad_template),
        ] {
            p.sample(name, &[("kind", kind)], n);
        }
        p.counter(
            "sluice_peer_template_misses_total",
            "Data sets that arrived before their template.",
            d.template_misses,
        );
        p.counter(
            "sluice_peer_templates_received_total",
            "Template records received.",
            d.templates_received,
        );
        p.counter(
            "sluice_peer_templates_withdrawn_total",
            "Templates withdrawn.",
            d.templates_withdrawn,
        );
        p.counter(
            "sluice_peer_options_records_total",
            "Options data records decoded.",
            d.options_records,
        );
        p.counter(
            "sluice_peer_counter_samples_total",
            "sFlow counter samples.",
            d.counter_samples,
        );
        p.gauge(
            "sluice_peer_held_data_sets",
            "Data sets held waiting for their template.",
            d.held,
        );
        p.counter(
            "sluice_peer_held_released_total",
            "Held data sets decoded after their template arrived.",
            d.held_released,
        );
        p.counter(
            "sluice_peer_held_expired_total",
            "Held data sets dropped by the timeout.",
            d.held_expired,
        );
        p.counter(
            "sluice_peer_held_dropped_total",
            "Held data sets dropped by the per-exporter bound.",
            d.held_dropped,
        );
        p.counter(
            "sluice_peer_sequence_lost_total",
            "Loss seen in exporters' sequence numbers.",
            d.lost_total,
        );
        let name = "sluice_peer_exporter_sequence_lost_total";
        p.family(
            name,
            "counter",
            "Loss seen in sequence numbers, by exporter.",
        );
        let mut lost: Vec<_> = d.lost_per_exporter.into_iter().collect();
        lost.sort();
        for (exporter, n) in lost.into_iter().take(MAX_EXPORTER_LABELS) {
            p.sample(name, &[("exporter", &exporter.to_string())], n);
        }
    }

    fn render_outputs(&self, p: &mut Exposition) {
        let outputs = lock(&self.outputs).clone();
        type Field = fn(&OutputStats) -> u64;
        let families: [(&str, &str, &str, Field); 8] = [
            (
                "sluice_peer_output_buffered_records",
                "gauge",
                "Records waiting in the output's buffer.",
                |o| o.buffered() as u64,
            ),
            (
                "sluice_peer_output_in_flight_records",
                "gauge",
                "Records handed to the destination, acknowledgement pending (Kafka).",
                |o| o.in_flight() as u64,
            ),
            (
                "sluice_peer_output_failed_records_total",
                "counter",
                "Records the destination rejected or never acknowledged (Kafka), logged.",
                OutputStats::failed_records,
            ),
            (
                "sluice_peer_output_buffer_capacity_records",
                "gauge",
                "Output buffer size.",
                |o| o.capacity as u64,
            ),
            (
                "sluice_peer_output_sent_records_total",
                "counter",
                "Records written by the output (Kafka: acknowledged by the broker).",
                OutputStats::sent,
            ),
            (
                "sluice_peer_output_overflow_records_total",
                "counter",
                "Records dropped because the output's buffer was full.",
                OutputStats::overflow,
            ),
            (
                "sluice_peer_output_errors_total",
                "counter",
                "Failed writes (each retried).",
                |o| o.errors.load(Relaxed),
            ),
            (
                "sluice_peer_output_shutdown_dropped_records_total",
                "counter",
                "Records given up on at shutdown.",
                OutputStats::abandoned_total,
            ),
        ];
        for (name, kind, help, field) in families {
            p.family(name, kind, help);
            for o in &outputs {
                p.sample(name, &[("output", &o.name)], field(o));
            }
        }
        let name = "sluice_peer_output_up";
        p.family(name, "gauge", "1 when the output's last write succeeded.");
        for o in &outputs {
            p.sample(name, &[("output", &o.name)], u8::from(o.up.load(Relaxed)));
        }
        let name = "sluice_peer_output_latency_seconds";
        p.family(
            name,
            "histogram",
            "Datagram received to record written, per record.",
        );
        for o in &outputs {
            o.latency.render(p, name, &o.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_drops_per_reason_and_exporter() {
        let m = Metrics::new();
        m.register_shards(2);
        m.dropped(DropReason::QueueFull, "198.18.0.7".parse().unwrap(), 3);
        let out = m.register_output("0-file".into(), 10);
        assert_eq!(out.reserve(8), 8);
        assert_eq!(out.reserve(5), 2);
        let text = m.render();
        assert!(
            text.contains("sluice_peer_drops_total{reason=\"queue_full\"} 3\n"),
            "{text}"
        );
        assert!(text.contains(
            "sluice_peer_exporter_drops_total{exporter=\"198.18.0.7\",reason=\"queue_full\"} 3\n"
        ));
        assert!(text.contains("sluice_peer_output_overflow_records_total{output=\"0-file\"} 3\n"));
        assert!(text.contains("sluice_peer_output_buffered_records{output=\"0-file\"} 10\n"));
        assert!(text.contains("sluice_peer_shards 2\n"));
        assert!(text.contains(
            "sluice_peer_output_latency_seconds_bucket{output=\"0-file\",le=\"+Inf\"} 0\n"
        ));
        assert_eq!(m.total_drops(), 6);
    }

    #[test]
    fn acknowledged_outputs_count_in_flight_sent_failed_and_purged() {
        let m = Metrics::new();
        let k = m.register_output("1-kafka".into(), 100);
        k.handed_over(10);
        let mut latency = crate::metrics::LatencyTally::default();
        for _ in 0..6 {
            latency.observe(2_000_000);
        }
        k.acknowledged(6, &latency);
        k.rejected(3, &"broker said no");
        assert_eq!((k.in_flight(), k.sent(), k.failed_records()), (1, 6, 3));
        k.purged(1);
        assert_eq!((k.in_flight(), k.abandoned_total()), (0, 1));
        // Failed and purged records are drops; acknowledged ones are not.
        assert_eq!(m.total_drops(), 4);
        let text = m.render();
        for line in [
            "sluice_peer_output_in_flight_records{output=\"1-kafka\"} 0\n",
            "sluice_peer_output_failed_records_total{output=\"1-kafka\"} 3\n",
            "sluice_peer_output_sent_records_total{output=\"1-kafka\"} 6\n",
            "sluice_peer_output_latency_seconds_count{output=\"1-kafka\"} 6\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
