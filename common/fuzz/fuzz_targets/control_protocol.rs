//! The control protocol parsers on arbitrary bytes: the frame check, both directions of the
//! peer channel, and the admin API's path + body. None may panic; a frame that decodes must
//! encode again.
#![no_main]

use sluice_common::protocol::{
    AdminRequest, CentralMessage, FRAME_HEADER, PeerMessage, check_frame, decode_payload,
    encode_frame,
};

fn frames<T: serde::Serialize + serde::de::DeserializeOwned>(mut data: &[u8]) {
    while let Ok(len) = check_frame(data) {
        if let Ok(msg) = decode_payload::<T>(&data[FRAME_HEADER..len]) {
            let mut out = Vec::new();
            assert!(encode_frame(&msg, &mut out).is_ok());
        }
        data = &data[len..];
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    frames::<PeerMessage>(data);
    frames::<CentralMessage>(data);
    // First line: the URL path; the rest: the JSON body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    if let Ok(path) = std::str::from_utf8(&data[..split]) {
        let _ = AdminRequest::from_http(path, data.get(split + 1..).unwrap_or_default());
    }
});
