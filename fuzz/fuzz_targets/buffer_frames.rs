//! Buffer segment recovery: any bytes scan without a panic; every frame found is whole
//! and checksummed; frames written by the encoder are all found again, in order, even
//! after arbitrary garbage in front of them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shipper::buffer::frame;

fuzz_target!(|data: &[u8]| {
    let (found, damage) = frame::scan(data);
    let mut end = 0u64;
    for f in &found {
        assert!(f.offset >= end, "frames overlap");
        let bytes = &data[f.offset as usize..];
        let h = frame::decode_header(bytes)
            .expect("found frame has a valid header")
            .expect("found frame is whole");
        assert_eq!(h, f.header);
        frame::check_payload(&h, bytes).expect("found frame's payload checks out");
        end = f.offset + h.frame_len();
    }
    assert!(damage.torn_tail <= data.len() as u64);

    // Round trip: garbage, then frames made of the input's pieces. The garbage holds no
    // frame start (no `S`): a segment is append-only and a restart writes a new one, so
    // frames never follow damage within one segment; a crafted valid frame in front
    // could legitimately claim the bytes after it, which is not damage.
    let mut seg: Vec<u8> = data[..data.len().min(64)]
        .iter()
        .map(|&b| if b == frame::MAGIC[0] { b's' } else { b })
        .collect();
    let mut payloads = Vec::new();
    for chunk in data.chunks(97).take(8) {
        frame::encode(&mut seg, 0, chunk.len() as u32, chunk);
        payloads.push(chunk);
    }
    let (again, _) = frame::scan(&seg);
    let tail: Vec<&[u8]> = again
        .iter()
        .rev()
        .take(payloads.len())
        .rev()
        .map(|f| frame::check_payload(&f.header, &seg[f.offset as usize..]).unwrap())
        .collect();
    assert_eq!(tail, payloads, "encoded frames are found again");
});
