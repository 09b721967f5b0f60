//! The reader against hand-assembled blobs (every byte chosen by the test),
//! corrupt ones, and the running kernel's own BTF.

mod builder;
mod real;
mod synthetic;
