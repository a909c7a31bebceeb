//! Tools on the top floor: synthetic web-vitals events (`weir generate`,
//! the demo, the benchmarks) and the benchmarks that measure the stages
//! side by side with a reference (`weir bench ingest`, `weir bench aggregate`).

pub mod bench_aggregate;
pub mod bench_ingest;
pub mod generate;
