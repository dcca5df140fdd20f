//! The network data plane: moves the events of exchange channels between worker processes over
//! one multiplexed TCP connection per pair of workers, with credit-based flow control so a slow
//! consumer on one worker slows its remote producers exactly as a full local channel would.
//!
//! A remote channel keeps the tasks' view of their inputs and outputs: a producer's
//! [`NetOutlet`] encodes each event and writes its frame on the producer's own thread (batches
//! are joined until they fill a frame of a few hundred KiB, or the task flushes at its buffer
//! timeout or before it waits; out of credit, they are held and joined rather than waited
//! for), and a consumer waits on a [`NetInlet`]'s queue together with its
//! local channels and decodes what it takes. The connection's reader only moves frames into
//! those queues.
//!
//! The protocol (frames in [`frame`]): the first of two workers that needs a channel to the
//! other connects and says hello; that one connection carries the channels of both
//! directions. Each channel starts with an open frame. The receiver grants
//! [`INITIAL_CREDITS`] once the open arrived and the channel is registered locally, whichever
//! came last; every data frame spends one credit, and every frame the consumer takes out
//! returns one (in credit frames of half the window, or at once when its queue runs empty).
//! The connection's reader therefore never waits on a channel (a data frame always fits its
//! queue), and no queue holds more than the credits granted. A lost connection fails every
//! channel on it; channels are not reconnected, a restarted job opens new ones under a new
//! attempt. Events are encoded by [`codec`]: a compact layout for batches of strings and byte
//! vectors, bincode for everything else.

mod channel;
pub mod codec;
mod conn;
pub mod frame;
mod peers;
mod plane;
#[cfg(test)]
mod tests;
mod typed;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::exchange::CHANNEL_CAPACITY;
use sluice_core::SluiceError;

pub use channel::{NetReceiver, NetSender};
pub use plane::DataPlane;
pub use typed::{
    COALESCED_RECORDS_MAX, FRAME_TARGET_BYTES, NetInlet, NetOutlet, records_per_frame,
};

/// Data frames a receiver lets a sender have in flight per channel before the sender must wait
/// for a credit; the same bound as a local channel, so remote exchanges buffer no more.
pub const INITIAL_CREDITS: u32 = CHANNEL_CAPACITY as u32;

/// Identifies one logical channel of an exchange across the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelId {
    /// Attempt of the job: a restarted job uses a new attempt, so its channels never mix with
    /// the frames of the attempt before.
    pub attempt: u64,
    /// Consumer node id.
    pub node: u32,
    /// Input index at the consumer (a node with two inputs reads two edges).
    pub input: u16,
    /// Producer subtask.
    pub producer: u32,
    /// Consumer subtask.
    pub consumer: u32,
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "channel (attempt {}, node {}, input {}, subtask {} -> {})",
            self.attempt, self.node, self.input, self.producer, self.consumer
        )
    }
}

/// An error on a channel with a peer, classified as external (the network or the other
/// process failed) so callers treat it like any other lost resource.
pub(crate) fn channel_error(
    ch: &ChannelId,
    peer: &str,
    kind: std::io::ErrorKind,
    message: impl fmt::Display,
) -> SluiceError {
    SluiceError::io(
        format!("{ch} with {peer}"),
        std::io::Error::new(kind, message.to_string()),
    )
}

/// The error of a wait given up because the job is being cancelled, as local exchanges report it.
pub(crate) fn cancelled() -> SluiceError {
    SluiceError::Cancelled { job: String::new() }
}
