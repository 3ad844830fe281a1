//! What the appliance does with an uploaded chunk (`PUT /chunks/{id}`): the canonical frame
//! check (`ferry_format::chunk::check_frame`: one zstd frame, no skippable or trailing data,
//! declared content size within bounds), then bounded decompression and the length and id
//! checks (`ferry_store::chunks::check_chunk`). The first 32 bytes are the claimed id.
#![no_main]

use ferry_format::chunk::{check_frame, MAX_CHUNK_SIZE};
use ferry_format::ChunkId;
use ferry_store::chunks::check_chunk;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((id, frame)) = data.split_first_chunk::<32>() else {
        return;
    };
    let checked = check_frame(frame);
    if let Ok(info) = &checked {
        assert!(info.content_size <= u64::from(MAX_CHUNK_SIZE));
    }
    if let Ok(len) = check_chunk(&ChunkId(*id), frame) {
        let info = checked.expect("check_chunk accepts only frames check_frame accepts");
        assert_eq!(len, info.content_size);
    }
});
