//! Two nodes, one verdict, on the real kernel: every fault scenario of the
//! lab, with flannel-trace live on both nodes (`--listen` on A, `--peer` on
//! B, both probing), asserting the segment, direction and (where the kernel
//! reports one) drop reason of the verdict (`faults`). Plus the ways a join
//! can go wrong: a peer without the token, a peer killed mid-session
//! (`peers`), a tracer that loses events and damaged recordings
//! (`offline`).

#[path = "verdict/faults.rs"]
mod faults;
#[path = "verdict/offline.rs"]
mod offline;
#[path = "verdict/peers.rs"]
mod peers;
