//! Wire format of the data plane: length-prefixed frames `[u32 len][u8 kind][channel id][payload]`
//! (integers little-endian, `len` counting everything after itself), so one stream can carry
//! the frames of many channels and a reader always knows where the next frame starts.

use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};

use super::ChannelId;

/// Encoded size of a [`ChannelId`]: attempt u64, node u32, input u16, producer u32, consumer u32.
pub const CHANNEL_ID_LEN: usize = 8 + 4 + 2 + 4 + 4;
/// Bytes before the payload: length, kind, channel id.
pub const HEADER_LEN: usize = 4 + 1 + CHANNEL_ID_LEN;
/// Largest frame a reader accepts; anything longer means a corrupt stream or a foreign peer,
/// and refusing it keeps a bad length from allocating the whole memory.
pub const MAX_FRAME_LEN: usize = 1 << 30;
/// First bytes of the hello payload, so a stray client is told apart from a worker.
pub const MAGIC: &[u8; 8] = b"SLUICE\x00\x01";
/// Payloads up to this size are copied behind their header and written with one plain write;
/// bigger ones go out as one vectored write without the copy.
const COALESCE_LEN: usize = 16 << 10;

/// What a frame means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// First frame of a connection, from the connecting worker: [`MAGIC`] then its own data
    /// plane address (UTF-8), which names it in errors and keys the pair's one connection.
    /// The accepting worker answers with a hello of [`MAGIC`] then `1` (this connection
    /// carries the pair's channels both ways) or `0` (it keeps another one; the connecting
    /// worker uses that). Channel id unused.
    Hello = 0,
    /// Sender to receiver: the sender opened the channel and waits for credits.
    Open = 1,
    /// Sender to receiver: one event as [`super::codec`] encodes it; spends one credit.
    Data = 2,
    /// Receiver to sender: payload u32, the number of further data frames the sender may send.
    Credit = 3,
    /// Sender to receiver: the sender closed the channel; nothing more will come from it.
    Close = 4,
    /// Receiver to sender: the receiver closed the channel; it takes nothing more. (Apart from
    /// [`Kind::Close`] because one connection carries channels both ways.)
    Release = 5,
}

impl Kind {
    fn from_u8(b: u8) -> io::Result<Kind> {
        Ok(match b {
            0 => Kind::Hello,
            1 => Kind::Open,
            2 => Kind::Data,
            3 => Kind::Credit,
            4 => Kind::Close,
            5 => Kind::Release,
            _ => return Err(invalid(format!("unknown frame kind {b}"))),
        })
    }
}

/// One decoded frame.
#[derive(Debug)]
pub struct Frame {
    pub kind: Kind,
    pub ch: ChannelId,
    pub payload: Vec<u8>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The header of a frame with a payload of `payload_len` bytes.
pub fn header(kind: Kind, ch: &ChannelId, payload_len: usize) -> [u8; HEADER_LEN] {
    let len = (1 + CHANNEL_ID_LEN + payload_len) as u32;
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4] = kind as u8;
    h[5..13].copy_from_slice(&ch.attempt.to_le_bytes());
    h[13..17].copy_from_slice(&ch.node.to_le_bytes());
    h[17..19].copy_from_slice(&ch.input.to_le_bytes());
    h[19..23].copy_from_slice(&ch.producer.to_le_bytes());
    h[23..27].copy_from_slice(&ch.consumer.to_le_bytes());
    h
}

fn channel_id(b: &[u8]) -> ChannelId {
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    ChannelId {
        attempt: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
        node: u32_at(8),
        input: u16::from_le_bytes(b[12..14].try_into().expect("2 bytes")),
        producer: u32_at(14),
        consumer: u32_at(18),
    }
}

/// Writes one frame. `scratch` is the writer's reused buffer for small frames, so credits,
/// watermarks and barriers cost one system call and no allocation.
pub fn write_frame<W: Write>(
    w: &mut W,
    scratch: &mut Vec<u8>,
    kind: Kind,
    ch: &ChannelId,
    payload: &[u8],
) -> io::Result<()> {
    if HEADER_LEN + payload.len() > MAX_FRAME_LEN {
        return Err(invalid(format!(
            "frame of {} bytes exceeds the limit of {MAX_FRAME_LEN}",
            payload.len()
        )));
    }
    let h = header(kind, ch, payload.len());
    if payload.len() <= COALESCE_LEN {
        scratch.clear();
        scratch.extend_from_slice(&h);
        scratch.extend_from_slice(payload);
        return w.write_all(scratch);
    }
    let mut slices = [IoSlice::new(&h), IoSlice::new(payload)];
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one frame; a clean end of stream before it is `UnexpectedEof`.
pub fn read_frame<R: Read>(r: &mut BufReader<R>) -> io::Result<Frame> {
    read_frame_into(r, Vec::new())
}

/// [`read_frame`] into `buf`, a payload vector handed back for reuse: a data frame then costs
/// no allocation, and no zeroing when it is no longer than the frame `buf` held before. The
/// header comes from the reader's buffer; the payload takes what is buffered and reads the
/// rest straight into `buf`, so a big frame is not copied through the buffer.
pub fn read_frame_into<R: Read>(r: &mut BufReader<R>, buf: Vec<u8>) -> io::Result<Frame> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
    if !(1 + CHANNEL_ID_LEN..=MAX_FRAME_LEN).contains(&len) {
        return Err(invalid(format!("bad frame length {len}")));
    }
    let kind = Kind::from_u8(h[4])?;
    let ch = channel_id(&h[5..]);
    let n = len - 1 - CHANNEL_ID_LEN;
    let mut payload = buf;
    // Overwritten below; only bytes beyond the vector's previous length are zeroed.
    payload.resize(n, 0);
    let buffered = r.buffer();
    let k = buffered.len().min(n);
    payload[..k].copy_from_slice(&buffered[..k]);
    r.consume(k);
    if k < n {
        r.get_mut().read_exact(&mut payload[k..])?;
    }
    Ok(Frame { kind, ch, payload })
}

/// The payload of a credit frame.
pub fn credit_payload(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

/// The credits a credit frame grants.
pub fn parse_credit(payload: &[u8]) -> io::Result<u32> {
    let b: [u8; 4] = payload
        .try_into()
        .map_err(|_| invalid(format!("credit payload of {} bytes", payload.len())))?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_small_and_large() {
        let ch = ChannelId {
            attempt: u64::MAX - 1,
            node: 7,
            input: 1,
            producer: 3,
            consumer: 70_000,
        };
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        write_frame(
            &mut wire,
            &mut scratch,
            Kind::Credit,
            &ch,
            &credit_payload(4),
        )
        .unwrap();
        write_frame(&mut wire, &mut scratch, Kind::Data, &ch, &big).unwrap();
        write_frame(&mut wire, &mut scratch, Kind::Close, &ch, &[]).unwrap();
        assert_eq!(wire.len(), 3 * HEADER_LEN + 4 + big.len());
        let mut r = BufReader::with_capacity(1000, &wire[..]);
        let f = read_frame(&mut r).unwrap();
        assert_eq!(
            (f.kind, f.ch, parse_credit(&f.payload).unwrap()),
            (Kind::Credit, ch, 4)
        );
        // A reused vector longer than the frame keeps none of its old bytes.
        let f = read_frame_into(&mut r, vec![1u8; 300_000]).unwrap();
        assert_eq!((f.kind, f.ch), (Kind::Data, ch));
        assert_eq!(f.payload, big);
        let f = read_frame_into(&mut r, f.payload).unwrap();
        assert_eq!((f.kind, f.payload.len()), (Kind::Close, 0));
        let eof = read_frame(&mut r).unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn rejects_garbage() {
        let mut bad = header(Kind::Data, &ChannelId::default_for_tests(), 0);
        bad[4] = 9;
        assert!(read_frame(&mut BufReader::new(&bad[..])).is_err());
        let mut huge = bad;
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_frame(&mut BufReader::new(&huge[..])).is_err());
        let truncated = &header(Kind::Data, &ChannelId::default_for_tests(), 10)[..];
        assert!(read_frame(&mut BufReader::new(truncated)).is_err());
    }

    impl ChannelId {
        fn default_for_tests() -> ChannelId {
            ChannelId {
                attempt: 1,
                node: 2,
                input: 0,
                producer: 0,
                consumer: 0,
            }
        }
    }
}
