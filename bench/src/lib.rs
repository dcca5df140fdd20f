//! Throughput benchmarks that print records per CPU-second and peak RSS.
