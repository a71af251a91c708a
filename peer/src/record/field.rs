//! The fields of a JSON record, by GoFlow2's JSON names: `fields = [...]` on an output picks
//! some of them, in the order given, as GoFlow2's `formatter.fields` does.

/// Declares [`Field`] with its JSON names, in the order of a full record.
macro_rules! fields {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// One field of a JSON record.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Field {
            $($variant),*
        }

        impl Field {
            /// Every field, in the order a full record writes them (GoFlow2's).
            pub const ALL: &[Field] = &[$(Field::$variant),*];

            /// Its JSON key.
            pub fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => $name),*
                }
            }

            /// Calls `f` with every field, in order, one call per field written out: with `f`
            /// inlined, the match on each constant field folds away and a full record is
            /// written as straight-line code (a loop over [`Field::ALL`] cost the JSON writer
            /// about 30 %). Chosen once per encoding (`fields` absent), not per record.
            #[inline(always)]
            pub(crate) fn each(mut f: impl FnMut(Field)) {
                $(f(Field::$variant);)*
            }
        }
    };
}

fields! {
    Type = "type",
    TimeReceivedNs = "time_received_ns",
    SequenceNum = "sequence_num",
    SamplingRate = "sampling_rate",
    SamplerAddress = "sampler_address",
    TimeFlowStartNs = "time_flow_start_ns",
    TimeFlowEndNs = "time_flow_end_ns",
    Bytes = "bytes",
    Packets = "packets",
    SrcAddr = "src_addr",
    DstAddr = "dst_addr",
    Etype = "etype",
    Proto = "proto",
    SrcPort = "src_port",
    DstPort = "dst_port",
    InIf = "in_if",
    OutIf = "out_if",
    SrcMac = "src_mac",
    DstMac = "dst_mac",
    SrcVlan = "src_vlan",
    DstVlan = "dst_vlan",
    VlanId = "vlan_id",
    IpTos = "ip_tos",
    ForwardingStatus = "forwarding_status",
    IpTtl = "ip_ttl",
    IpFlags = "ip_flags",
    TcpFlags = "tcp_flags",
    IcmpType = "icmp_type",
    IcmpCode = "icmp_code",
    Ipv6FlowLabel = "ipv6_flow_label",
    FragmentId = "fragment_id",
    FragmentOffset = "fragment_offset",
    SrcAs = "src_as",
    DstAs = "dst_as",
    NextHop = "next_hop",
    NextHopAs = "next_hop_as",
    SrcNet = "src_net",
    DstNet = "dst_net",
    BgpNextHop = "bgp_next_hop",
    BgpCommunities = "bgp_communities",
    AsPath = "as_path",
    MplsLabel = "mpls_label",
    MplsTtl = "mpls_ttl",
    MplsIp = "mpls_ip",
    ObservationDomainId = "observation_domain_id",
    ObservationPointId = "observation_point_id",
    LayerStack = "layer_stack",
    LayerSize = "layer_size",
    Ipv6RoutingHeaderAddresses = "ipv6_routing_header_addresses",
    Ipv6RoutingHeaderSegLeft = "ipv6_routing_header_seg_left",
}

/// Why a `fields` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    #[error("must name at least one field")]
    Empty,
    #[error("unknown field {0:?}; the fields are {names}", names = all_names())]
    Unknown(String),
    #[error("{0:?} is listed twice")]
    Repeated(String),
}

fn all_names() -> String {
    Field::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Field {
    /// The field with JSON key `name`.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// `names` as fields, in their order: none unknown, none twice, at least one.
    pub fn parse_list(names: &[String]) -> Result<Vec<Field>, FieldsError> {
        if names.is_empty() {
            return Err(FieldsError::Empty);
        }
        let mut fields = Vec::with_capacity(names.len());
        for name in names {
            let field = Field::from_name(name).ok_or_else(|| FieldsError::Unknown(name.clone()))?;
            if fields.contains(&field) {
                return Err(FieldsError::Repeated(name.clone()));
            }
            fields.push(field);
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_list_keeps_its_order_and_refuses_unknown_repeated_and_empty() {
        assert_eq!(
            Field::parse_list(&names(&["dst_port", "type", "bytes"])),
            Ok(vec![Field::DstPort, Field::Type, Field::Bytes])
        );
        let unknown = Field::parse_list(&names(&["bytes", "src_ip"])).unwrap_err();
        assert_eq!(unknown, FieldsError::Unknown("src_ip".into()));
        let text = unknown.to_string();
        assert!(text.starts_with("unknown field \"src_ip\"; the fields are type, "));
        assert!(text.ends_with(", ipv6_routing_header_seg_left"), "{text}");
        assert_eq!(
            Field::parse_list(&names(&["bytes", "packets", "bytes"])),
            Err(FieldsError::Repeated("bytes".into()))
        );
        assert_eq!(Field::parse_list(&[]), Err(FieldsError::Empty));
    }

    #[test]
    fn names_are_unique() {
        for (i, f) in Field::ALL.iter().enumerate() {
            assert_eq!(Field::from_name(f.name()), Some(*f));
            assert!(Field::ALL[..i].iter().all(|g| g.name() != f.name()));
        }
    }
}
