#!/usr/bin/env python3
"""Build a deterministic pcap of NetFlow v5, NetFlow v9 and IPFIX export packets with scapy's
netflow layers (an encoder independent of Sluice's), for peer/tests/oracle_scapy.rs.

Usage: scapy_netflow.py OUT.pcap
"""
import sys

from scapy.all import IP, UDP, Ether, wrpcap
from scapy.layers.netflow import (
    GetNetflowRecordV9,
    NetflowDataflowsetV9,
    NetflowFlowsetV9,
    NetflowHeader,
    NetflowHeaderV5,
    NetflowHeaderV9,
    NetflowHeaderV10,
    NetflowOptionsFlowsetOptionV9,
    NetflowOptionsFlowsetScopeV9,
    NetflowOptionsFlowsetV9,
    NetflowRecordV5,
    NetflowTemplateFieldV9,
    NetflowTemplateV9,
)
from scapy.packet import Raw

EXPORT = 1700000000
UPTIME = 3600000  # ms


def udp(src):
    return (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src=src, dst="198.18.0.1", id=1, flags="DF")
        / UDP(sport=40000, dport=2055)
    )


def v5():
    records = [
        NetflowRecordV5(src="10.0.0.1", dst="10.0.0.2", nexthop="10.0.0.254", input=3, output=4,
                        dpkts=10, dOctets=1500, first=UPTIME - 10000, last=UPTIME - 1000,
                        srcport=443, dstport=51000, tcpFlags=0x1B, prot=6, tos=0x20,
                        src_as=65001, dst_as=65002, src_mask=24, dst_mask=16),
        NetflowRecordV5(src="192.0.2.1", dst="198.51.100.7", nexthop="0.0.0.0", input=5, output=6,
                        dpkts=1, dOctets=76, first=UPTIME - 500, last=UPTIME - 1,
                        srcport=53, dstport=33000, tcpFlags=0, prot=17, tos=0,
                        src_as=0, dst_as=0, src_mask=0, dst_mask=0),
        NetflowRecordV5(src="203.0.113.5", dst="203.0.113.6", nexthop="203.0.113.1", input=7,
                        output=8, dpkts=4, dOctets=336, first=UPTIME - 4000, last=UPTIME - 100,
                        srcport=0, dstport=0x0800, tcpFlags=0, prot=1, tos=0,
                        src_as=64512, dst_as=64513, src_mask=30, dst_mask=30),
    ]
    hdr = NetflowHeader(version=5) / NetflowHeaderV5(
        count=len(records), sysUptime=UPTIME, unixSecs=EXPORT, unixNanoSeconds=250000000,
        flowSequence=1000, engineType=0, engineID=1, samplingInterval=0x4000 | 64)
    pkt = udp("198.18.1.10") / hdr
    for r in records:
        pkt = pkt / r
    return pkt


V4_FIELDS = [
    ("IPV4_SRC_ADDR", 4), ("IPV4_DST_ADDR", 4), ("IPV4_NEXT_HOP", 4),
    ("L4_SRC_PORT", 2), ("L4_DST_PORT", 2), ("PROTOCOL", 1), ("TOS", 1), ("TCP_FLAGS", 1),
    ("INPUT_SNMP", 4), ("OUTPUT_SNMP", 4), ("IN_BYTES", 8), ("IN_PKTS", 4),
    ("SRC_AS", 4), ("DST_AS", 4), ("SRC_MASK", 1), ("DST_MASK", 1),
]

FLOWS_V4 = [
    dict(IPV4_SRC_ADDR="10.1.1.1", IPV4_DST_ADDR="10.2.2.2", IPV4_NEXT_HOP="10.0.0.1",
         L4_SRC_PORT=1234, L4_DST_PORT=80, PROTOCOL=6, TOS=0, TCP_FLAGS=0x12,
         INPUT_SNMP=1, OUTPUT_SNMP=2, IN_BYTES=4000, IN_PKTS=5, SRC_AS=65001, DST_AS=65002,
         SRC_MASK=24, DST_MASK=24),
    dict(IPV4_SRC_ADDR="10.1.1.3", IPV4_DST_ADDR="10.2.2.4", IPV4_NEXT_HOP="10.0.0.1",
         L4_SRC_PORT=5353, L4_DST_PORT=53, PROTOCOL=17, TOS=0xB8, TCP_FLAGS=0,
         INPUT_SNMP=1, OUTPUT_SNMP=3, IN_BYTES=120, IN_PKTS=2, SRC_AS=0, DST_AS=15169,
         SRC_MASK=16, DST_MASK=8),
    dict(IPV4_SRC_ADDR="172.16.5.5", IPV4_DST_ADDR="8.8.8.8", IPV4_NEXT_HOP="172.16.0.1",
         L4_SRC_PORT=40000, L4_DST_PORT=443, PROTOCOL=6, TOS=0x20, TCP_FLAGS=0x1B,
         INPUT_SNMP=10, OUTPUT_SNMP=20, IN_BYTES=123456789012, IN_PKTS=99999, SRC_AS=64512,
         DST_AS=15169, SRC_MASK=12, DST_MASK=24),
]


def template(tid, fields, set_id):
    return NetflowFlowsetV9(
        flowSetID=set_id,
        templates=[NetflowTemplateV9(
            templateID=tid,
            fieldCount=len(fields),
            template_fields=[NetflowTemplateFieldV9(fieldType=n, fieldLength=l) for n, l in fields],
        )],
    )


def v9():
    fields = V4_FIELDS + [("FIRST_SWITCHED", 4), ("LAST_SWITCHED", 4)]
    tmpl = template(256, fields, 0)
    rec = GetNetflowRecordV9(tmpl)
    opts = NetflowOptionsFlowsetV9(
        templateID=257,
        option_scope_length=4,
        option_field_length=4,
        scopes=[NetflowOptionsFlowsetScopeV9(scopeFieldType=1, scopeFieldlength=4)],
        options=[NetflowOptionsFlowsetOptionV9(optionFieldType=34, optionFieldlength=4)],
    )
    # Options data for template 257: scope System = 0, SAMPLING_INTERVAL = 100.
    opts_data = NetflowDataflowsetV9(templateID=257, records=[Raw(bytes(4) + (100).to_bytes(4, "big"))])
    times = [(UPTIME - 5000, UPTIME - 1000), (UPTIME - 1000, UPTIME), (UPTIME - 60000, UPTIME - 30000)]
    data = NetflowDataflowsetV9(templateID=256, records=[
        rec(**f, FIRST_SWITCHED=a, LAST_SWITCHED=b) for f, (a, b) in zip(FLOWS_V4, times)
    ])
    hdr = NetflowHeader(version=9) / NetflowHeaderV9(
        count=6, sysUptime=UPTIME, unixSecs=EXPORT, packageSequence=77, SourceID=33)
    return udp("198.18.1.11") / hdr / opts / opts_data / tmpl / data


def v9_ipv6():
    fields = [("IPV6_SRC_ADDR", 16), ("IPV6_DST_ADDR", 16), ("IPV6_NEXT_HOP", 16),
              ("L4_SRC_PORT", 2), ("L4_DST_PORT", 2), ("PROTOCOL", 1), ("IN_BYTES", 4),
              ("IN_PKTS", 4), ("IPV6_SRC_MASK", 1), ("IPV6_DST_MASK", 1),
              ("FIRST_SWITCHED", 4), ("LAST_SWITCHED", 4)]
    tmpl = template(300, fields, 0)
    rec = GetNetflowRecordV9(tmpl)
    data = NetflowDataflowsetV9(templateID=300, records=[
        rec(IPV6_SRC_ADDR="2001:db8::1", IPV6_DST_ADDR="2001:db8:1::2", IPV6_NEXT_HOP="fe80::1",
            L4_SRC_PORT=546, L4_DST_PORT=547, PROTOCOL=17, IN_BYTES=300, IN_PKTS=3,
            IPV6_SRC_MASK=48, IPV6_DST_MASK=64, FIRST_SWITCHED=UPTIME - 2000, LAST_SWITCHED=UPTIME),
        rec(IPV6_SRC_ADDR="2001:db8::3", IPV6_DST_ADDR="2001:db8:2::4", IPV6_NEXT_HOP="::",
            L4_SRC_PORT=0, L4_DST_PORT=0x8000, PROTOCOL=58, IN_BYTES=64, IN_PKTS=1,
            IPV6_SRC_MASK=64, IPV6_DST_MASK=64, FIRST_SWITCHED=UPTIME - 10, LAST_SWITCHED=UPTIME - 10),
    ])
    hdr = NetflowHeader(version=9) / NetflowHeaderV9(
        count=3, sysUptime=UPTIME, unixSecs=EXPORT, packageSequence=78, SourceID=33)
    return udp("198.18.1.11") / hdr / tmpl / data


def ipfix():
    fields = V4_FIELDS + [("flowStartMilliseconds", 8), ("flowEndMilliseconds", 8)]
    tmpl = template(256, fields, 2)
    rec = GetNetflowRecordV9(tmpl)
    ms = EXPORT * 1000
    times = [(ms - 5000, ms - 1000), (ms - 1500, ms - 1), (ms - 90000, ms - 45000)]
    data = NetflowDataflowsetV9(templateID=256, records=[
        rec(**f, flowStartMilliseconds=a, flowEndMilliseconds=b) for f, (a, b) in zip(FLOWS_V4, times)
    ])
    hdr = NetflowHeader(version=10) / NetflowHeaderV10(
        ExportTime=EXPORT, flowSequence=500, ObservationDomainID=5)
    # scapy leaves the data set's padding out of the IPFIX message length; patch the length so
    # the message is valid (tshark calls the unpatched one a "partial flow").
    raw = bytes(hdr / tmpl / data)
    raw = raw[:2] + len(raw).to_bytes(2, "big") + raw[4:]
    return udp("198.18.1.12") / Raw(raw)


def main():
    pkts = [v5(), v9(), v9_ipv6(), ipfix()]
    for i, p in enumerate(pkts):
        p.time = EXPORT + i
    wrpcap(sys.argv[1], pkts)


if __name__ == "__main__":
    main()
