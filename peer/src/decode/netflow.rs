//! NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) messages: one set walker for both, differing only
//! in header layout, set ids and template record syntax.

use super::error::DecodeError;
use super::reader::{Reader, u16_at, u32_at};
use super::state::{Ctx, Exporter, Header, Held};
use super::stats::DecodeOutcome;
use super::template::{FieldSpec, Template, TemplateKey, TimeBase};
use crate::record::{FlowRecord, Protocol};

const V9_HEADER_LEN: usize = 20;
const IPFIX_HEADER_LEN: usize = 16;

fn truncated(protocol: Protocol, what: &'static str, offset: usize) -> DecodeError {
    DecodeError::Truncated {
        protocol,
        what,
        offset,
    }
}

fn parse_header(protocol: Protocol, d: &[u8]) -> Result<(Header, usize, usize), DecodeError> {
    let t = |o| truncated(protocol, "header", o);
    if protocol == Protocol::NetflowV9 {
        let sys_uptime = u32_at(d, 4).ok_or(t(4))?;
        let unix_secs = u32_at(d, 8).ok_or(t(8))?;
        let sequence = u32_at(d, 12).ok_or(t(12))?;
        let domain = u32_at(d, 16).ok_or(t(16))?;
        let header = Header {
            protocol,
            sequence,
            domain,
            time: TimeBase {
                export_ns: u64::from(unix_secs) * 1_000_000_000,
                sys_uptime_ms: Some(sys_uptime),
                system_init_ms: None,
            },
            export_secs: unix_secs,
        };
        Ok((header, V9_HEADER_LEN, d.len()))
    } else {
        let length = usize::from(u16_at(d, 2).ok_or(t(2))?);
        let export_time = u32_at(d, 4).ok_or(t(4))?;
        let sequence = u32_at(d, 8).ok_or(t(8))?;
        let domain = u32_at(d, 12).ok_or(t(12))?;
        if length < IPFIX_HEADER_LEN || length > d.len() {
            return Err(DecodeError::BadLength {
                protocol,
                what: "message",
                length,
                offset: 2,
            });
        }
        let header = Header {
            protocol,
            sequence,
            domain,
            time: TimeBase {
                export_ns: u64::from(export_time) * 1_000_000_000,
                sys_uptime_ms: None,
                system_init_ms: None,
            },
            export_secs: export_time,
        };
        Ok((header, IPFIX_HEADER_LEN, length))
    }
}

/// Set ids: (template set, options template set).
fn template_set_ids(protocol: Protocol) -> (u16, u16) {
    if protocol == Protocol::NetflowV9 {
        (0, 1)
    } else {
        (2, 3)
    }
}

pub(super) fn decode(
    ctx: &mut Ctx<'_>,
    state: &mut Exporter,
    protocol: Protocol,
    d: &[u8],
    out: &mut Vec<FlowRecord>,
) -> Result<DecodeOutcome, DecodeError> {
    let (header, start, end) = parse_header(protocol, d)?;
    let mut walk = Walk {
        header,
        new_templates: Vec::new(),
        data_records: 0,
        held_sets: 0,
    };
    let msg = d.get(..end).unwrap_or(d);
    let result = walk.sets(ctx, state, msg, start, out);
    // Sequence numbers: v9 counts export packets, IPFIX counts data records (unknowable when
    // part of the message was held, so tracking resynchronises on the next message).
    let advance = match protocol {
        Protocol::NetflowV9 => Some(1),
        _ if walk.held_sets > 0 || result.is_err() => None,
        _ => u32::try_from(walk.data_records).ok(),
    };
    let lost = state.track_sequence((protocol, header.domain), header.sequence, advance);
    ctx.add_lost(lost);
    let mut outcome = DecodeOutcome {
        held_sets: walk.held_sets,
        ..DecodeOutcome::default()
    };
    if !walk.new_templates.is_empty() {
        outcome.released_records = release_held(ctx, state, &walk.new_templates, out);
    }
    result.map(|()| outcome)
}

struct Walk {
    header: Header,
    new_templates: Vec<TemplateKey>,
    data_records: usize,
    held_sets: usize,
}

impl Walk {
    /// Walk the sets of `msg` (the message, without anything after its end) from `start`.
    fn sets(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &mut Exporter,
        msg: &[u8],
        start: usize,
        out: &mut Vec<FlowRecord>,
    ) -> Result<(), DecodeError> {
        let protocol = self.header.protocol;
        let (tmpl_id, opts_id) = template_set_ids(protocol);
        let end = msg.len();
        let mut off = start;
        // v9 exporters may pad the packet after the last flowset.
        while end.saturating_sub(off) >= 4 {
            let set_id = u16_at(msg, off).ok_or(truncated(protocol, "set header", off))?;
            let set_len =
                usize::from(u16_at(msg, off + 2).ok_or(truncated(protocol, "set header", off))?);
            if set_len < 4 || off + set_len > end {
                if protocol == Protocol::NetflowV9 && set_id == 0 && set_len == 0 {
                    break; // trailing zero padding
                }
                return Err(DecodeError::BadLength {
                    protocol,
                    what: "set",
                    length: set_len,
                    offset: off,
                });
            }
            let body = msg.get(off + 4..off + set_len).unwrap_or_default();
            if set_id == tmpl_id || set_id == opts_id {
                self.templates(ctx, state, body, set_id == opts_id, off + 4)?;
            } else if set_id >= 256 {
                let key = TemplateKey {
                    protocol,
                    domain: self.header.domain,
                    template_id: set_id,
                };
                match data_set(
                    ctx,
                    state,
                    &self.header,
                    key,
                    body,
                    ctx.time_received_ns,
                    out,
                ) {
                    Ok(Some(n)) => self.data_records += n,
                    Ok(None) => {
                        self.held_sets += 1;
                        hold(ctx, state, key, self.header, body);
                    }
                    Err(short) => {
                        return Err(DecodeError::ShortRecord {
                            protocol,
                            domain: key.domain,
                            template_id: key.template_id,
                            offset: off + 4 + short,
                        });
                    }
                }
            }
            // Set ids 2..=255 (v9) / 0, 1, 4..=255 (IPFIX) are reserved: skipped.
            off += set_len;
        }
        // IPFIX messages end exactly with their last set (v9 packets may be padded).
        if protocol == Protocol::Ipfix && off < end {
            return Err(truncated(protocol, "set header", off));
        }
        Ok(())
    }

    /// Parse a (options) template set body at datagram offset `base`.
    fn templates(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &mut Exporter,
        body: &[u8],
        options: bool,
        base: usize,
    ) -> Result<(), DecodeError> {
        let protocol = self.header.protocol;
        let domain = self.header.domain;
        let ipfix = protocol == Protocol::Ipfix;
        let mut r = Reader::new(body);
        while r.remaining() >= 4 {
            let at = base + r.pos();
            let t = |what| truncated(protocol, what, at);
            let template_id = r.u16().ok_or(t("template record"))?;
            let count_or_scope_len = r.u16().ok_or(t("template record"))?;
            if template_id == 0 && count_or_scope_len == 0 {
                break; // padding
            }
            let key = TemplateKey {
                protocol,
                domain,
                template_id,
            };
            if ipfix && count_or_scope_len == 0 {
                withdraw(ctx, state, key, options);
                continue;
            }
            let (scope_fields, total_fields) = if !options {
                (0, count_or_scope_len)
            } else if ipfix {
                let scope = r.u16().ok_or(t("options template record"))?;
                if scope == 0 {
                    return Err(DecodeError::BadTemplate {
                        protocol,
                        domain,
                        template_id,
                        reason: "options template without scope fields",
                    });
                }
                (scope, count_or_scope_len)
            } else {
                // v9 options templates give scope and option lengths in bytes.
                let option_len = r.u16().ok_or(t("options template record"))?;
                (
                    count_or_scope_len / 4,
                    count_or_scope_len / 4 + option_len / 4,
                )
            };
            let mut fields = Vec::with_capacity(usize::from(total_fields));
            for _ in 0..total_fields {
                let ie = r.u16().ok_or(t("template field"))?;
                let length = r.u16().ok_or(t("template field"))?;
                let enterprise = if ipfix && ie & 0x8000 != 0 {
                    Some(r.u32().ok_or(t("template field"))?)
                } else {
                    None
                };
                let id = if ipfix { ie & 0x7fff } else { ie };
                fields.push(FieldSpec {
                    id,
                    length,
                    enterprise,
                });
            }
            let template = Template::compile(key, fields, scope_fields, options)?
                .stamped(Some(self.header.stamp()));
            if !state.templates.contains_key(&key)
                && state.templates.len() >= ctx.cfg.max_templates_per_exporter
            {
                return Err(DecodeError::BadTemplate {
                    protocol,
                    domain,
                    template_id,
                    reason: "too many templates from this exporter",
                });
            }
            ctx.stats.templates_received += 1;
            // A refresh with the same definition is not a change.
            if state
                .templates
                .get(&key)
                .is_none_or(|old| !old.same_definition(&template))
            {
                state.templates_changed = true;
            }
            state.templates.insert(key, template);
            if !self.new_templates.contains(&key) {
                self.new_templates.push(key);
            }
        }
        Ok(())
    }
}

/// Template withdrawal (IPFIX): one id, or all (options) templates of the domain for ids 2 / 3.
fn withdraw(ctx: &mut Ctx<'_>, state: &mut Exporter, key: TemplateKey, options: bool) {
    let before = state.templates.len();
    if key.template_id == 2 || key.template_id == 3 {
        state.templates.retain(|k, t| {
            !(k.protocol == key.protocol && k.domain == key.domain && t.is_options() == options)
        });
    } else {
        state.templates.remove(&key);
    }
    let withdrawn = before - state.templates.len();
    ctx.stats.templates_withdrawn += withdrawn as u64;
    state.templates_changed |= withdrawn > 0;
}

/// Decode one data set; `Ok(None)` when its template is unknown.
fn data_set(
    ctx: &mut Ctx<'_>,
    state: &mut Exporter,
    header: &Header,
    key: TemplateKey,
    body: &[u8],
    time_received_ns: u64,
    out: &mut Vec<FlowRecord>,
) -> Result<Option<usize>, usize> {
    let Some(template) = state.templates.get(&key) else {
        ctx.stats.template_misses += 1;
        return Ok(None);
    };
    let domain_key = (key.protocol, key.domain);
    if template.is_options() {
        let (n, learned) = template.decode_options(body).map_err(|s| s.offset)?;
        ctx.stats.options_records += n as u64;
        let known = state.domains.entry(domain_key).or_default();
        let merged = super::template::DomainOptions {
            sampling_rate: if learned.sampling_rate > 0 {
                learned.sampling_rate
            } else {
                known.sampling_rate
            },
            system_init_ms: learned.system_init_ms.or(known.system_init_ms),
            stamp: Some(header.stamp()),
        };
        // The stamp says when the value last changed: a refresh keeps it.
        if !merged.same_values(known) {
            *known = merged;
            state.templates_changed = true;
        }
        return Ok(Some(n));
    }
    let domain = state.domains.get(&domain_key).copied().unwrap_or_default();
    let base = FlowRecord {
        flow_type: header.protocol,
        time_received_ns,
        sequence_num: header.sequence,
        sampling_rate: domain.sampling_rate,
        sampler_address: Some(ctx.exporter),
        observation_domain_id: header.domain,
        // GoFlow2: the export time unless the record carries its own times.
        time_flow_start_ns: header.time.export_ns,
        time_flow_end_ns: header.time.export_ns,
        ..FlowRecord::default()
    };
    let time = TimeBase {
        system_init_ms: domain.system_init_ms,
        ..header.time
    };
    let first = out.len();
    let result = template.decode_data(body, &base, &time, out);
    if ctx.cfg.apply_sampling {
        for r in out.get_mut(first..).unwrap_or_default() {
            ctx.apply_sampling(r);
        }
    }
    result.map(Some).map_err(|s| s.offset)
}

fn hold(ctx: &mut Ctx<'_>, state: &mut Exporter, key: TemplateKey, header: Header, body: &[u8]) {
    let max_sets = ctx.cfg.max_held_per_exporter;
    let max_bytes = ctx.cfg.max_held_bytes_per_exporter;
    if max_sets == 0 || body.len() > max_bytes {
        ctx.stats.held_dropped += 1;
        return;
    }
    while state.held.len() >= max_sets || state.held_bytes + body.len() > max_bytes {
        let Some(old) = state.held.pop_front() else {
            break;
        };
        state.held_bytes = state.held_bytes.saturating_sub(old.body.len());
        ctx.stats.held_dropped += 1;
        ctx.stats.held = ctx.stats.held.saturating_sub(1);
    }
    state.held_bytes += body.len();
    state.held.push_back(Held {
        key,
        time_received_ns: ctx.time_received_ns,
        header,
        body: body.to_vec(),
    });
    ctx.stats.held += 1;
}

/// Decode held data sets whose template is among `keys`, oldest first.
pub(super) fn release_held(
    ctx: &mut Ctx<'_>,
    state: &mut Exporter,
    keys: &[TemplateKey],
    out: &mut Vec<FlowRecord>,
) -> usize {
    if state.held.is_empty() {
        return 0;
    }
    let before = out.len();
    let held = std::mem::take(&mut state.held);
    for h in held {
        if !keys.contains(&h.key) {
            state.held.push_back(h);
            continue;
        }
        state.held_bytes = state.held_bytes.saturating_sub(h.body.len());
        ctx.stats.held = ctx.stats.held.saturating_sub(1);
        ctx.stats.held_released += 1;
        // A held set that turns out malformed is counted like any other bad record.
        if data_set(
            ctx,
            state,
            &h.header,
            h.key,
            &h.body,
            h.time_received_ns,
            out,
        )
        .is_err()
        {
            ctx.stats.errors.truncated += 1;
        }
    }
    out.len() - before
}
