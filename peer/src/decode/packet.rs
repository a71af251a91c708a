//! Sampled packet header parsing (Ethernet, 802.1Q, IPv4, IPv6, TCP, UDP, ICMP).
