#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flannel_trace::fuzzing::event_batch(data));
