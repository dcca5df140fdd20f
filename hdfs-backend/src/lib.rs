//! Durable storage for checkpoints, savepoints and archives behind one URL scheme (file:// today, hdfs:// later).
