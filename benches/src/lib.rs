//! Benchmarks for mediaproc.
//!
//! Criterion per-stage benches live in `benches/benches/` (run them with `cargo bench -p mediaproc-benches`);
//! the end-to-end load/latency harness will live here as well. Figures are recorded in `docs/performance.md`.
