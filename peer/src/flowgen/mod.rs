//! Flow generator: encoders for NetFlow v5/v9, IPFIX and sFlow v5, and a rate-paced sender.
