//! Library target of the eBPF crate, so that `hb-userspace` can list it as a
//! build-dependency (cargo then rebuilds the object when it changes). The
//! program itself is the `hb-xdp` binary in `main.rs`.
#![no_std]
