//! Durable storage for checkpoints, savepoints and archives behind one URL scheme (file://, hdfs://, viewfs://).
//!
//! Layers, bottom up: [`Storage`] (one URL scheme; [`LocalStorage`] for `file://`,
//! [`HdfsStorage`] for `hdfs://` and `viewfs://`, picked by [`resolve`], which also puts a path
//! without a scheme on `fs.defaultFS` when there is a Hadoop configuration, else on the local
//! disk), the checksummed file frame (`frame`), the snapshot format and
//! layout ([`SnapshotDir`], [`CheckpointMetadata`], [`load_snapshot`]) and checkpoint retention
//! ([`enforce_retention`]).

pub mod error;
mod frame;
mod hadoop_conf;
pub mod hdfs;
pub mod local;
mod native;
pub mod retention;
pub mod snapshot;
mod state_buf;
pub mod storage;

pub use error::{Result, StorageError};
pub use hdfs::{HdfsOptions, HdfsStorage};
pub use local::LocalStorage;
pub use retention::{collect_garbage, completed_checkpoints, enforce_retention, shared_file_name};
pub use snapshot::{
    CheckpointMetadata, FORMAT_VERSION, METADATA_FILE, NativeFile, OperatorState, SHARED_DIR,
    SnapshotDir, SnapshotKind, StateHandle, SubtaskState, load_snapshot, verify_snapshot,
};
pub use state_buf::StateBuf;
pub use storage::{BytesSource, ChunkIter, ChunkSink, ChunkSource, DirEntry, Storage, resolve};
