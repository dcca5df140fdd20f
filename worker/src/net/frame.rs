//! Wire format of the data plane: length-prefixed frames `[u32 len][u8 kind][channel id][payload]`
//! (integers little-endian, `len` counting everything after itself), so one stream can carry
//! the frames of many channels and a reader always knows where the next frame starts.

use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use sluice_core::placement::{LINE, lead_for};

use super::ChannelId;
use crate::blob_pool::BlobPool;

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
/// Records at least this long are handed to the kernel as slices of their own rather than
/// copied behind the frame's head. The kernel's work per slice costs more than copying a small
/// record (measured: a frame of 1024 records of 100 bytes as 1026 slices took a third more CPU
/// than copying them), so only records this large go without the copy.
const OWN_SLICE_LEN: usize = 4 << 10;

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
    pub payload: Bytes,
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
    write_frame_parts(w, scratch, kind, ch, payload, &[])
}

/// Bytes to leave unused at the front of `scratch` so that `src`, copied in behind a frame
/// header, keeps the offset within a line that it has where it is: a copy 27 bytes past its
/// source's offset is the slow case of `sluice_core::placement`.
fn copy_lead(scratch: &[u8], src: &[u8]) -> usize {
    lead_for(
        scratch.as_ptr(),
        (src.as_ptr() as usize).wrapping_sub(HEADER_LEN),
    )
}

/// Empties `scratch`, makes room for a frame of `len` bytes after the header that copies `src`
/// first, and writes the header (of the frame as [`header`] has it) after the lead that keeps
/// `src`'s copy aligned ([`copy_lead`]). Returns the lead: the frame starts there.
fn start_behind_header(
    scratch: &mut Vec<u8>,
    frame_header: &[u8; HEADER_LEN],
    src: &[u8],
    len: usize,
) -> usize {
    scratch.clear();
    // Room for all of it first: a buffer that moved would undo the alignment.
    scratch.reserve(LINE + HEADER_LEN + len);
    let lead = copy_lead(scratch, src);
    scratch.resize(lead, 0);
    scratch.extend_from_slice(frame_header);
    lead
}

/// Writes one frame whose payload is `head` followed by the bytes of every record in `tail`,
/// without first copying the records behind `head`: records of at least [`OWN_SLICE_LEN`]
/// bytes go to the kernel as slices of their own in one vectored write, smaller ones are
/// copied into `scratch` (behind the header and `head`), where one slice covers many.
pub fn write_frame_parts<W: Write>(
    w: &mut W,
    scratch: &mut Vec<u8>,
    kind: Kind,
    ch: &ChannelId,
    head: &[u8],
    tail: &[Bytes],
) -> io::Result<()> {
    let payload_len = head.len() + tail.iter().map(Bytes::len).sum::<usize>();
    if HEADER_LEN + payload_len > MAX_FRAME_LEN {
        return Err(invalid(format!(
            "frame of {payload_len} bytes exceeds the limit of {MAX_FRAME_LEN}"
        )));
    }
    let h = header(kind, ch, payload_len);
    // Where each slice's bytes are: a range of `scratch` (which still grows, so no slice of it
    // can be taken yet) or a record.
    let mut parts: Vec<Result<Range<usize>, &[u8]>> = Vec::new();
    let mut own_from;
    if head.len() > COALESCE_LEN {
        // A large head (a whole batch encoded by serde) goes as a slice of its own: copying it
        // behind the header would cost as much as the kernel's copy of it.
        if tail.is_empty() {
            return write_all_vectored(w, &mut [IoSlice::new(&h), IoSlice::new(head)]);
        }
        scratch.clear();
        scratch.extend_from_slice(&h);
        parts.push(Ok(0..HEADER_LEN));
        parts.push(Err(head));
        own_from = HEADER_LEN;
    } else {
        // A small head is copied behind its header; alone, the frame goes in one plain write.
        own_from = start_behind_header(scratch, &h, head, payload_len);
        scratch.extend_from_slice(head);
        if tail.is_empty() {
            return w.write_all(&scratch[own_from..]);
        }
    }
    for r in tail {
        if r.len() < OWN_SLICE_LEN {
            scratch.extend_from_slice(r);
            continue;
        }
        if scratch.len() > own_from {
            parts.push(Ok(own_from..scratch.len()));
            own_from = scratch.len();
        }
        parts.push(Err(r));
    }
    if scratch.len() > own_from {
        parts.push(Ok(own_from..scratch.len()));
    }
    let mut slices: Vec<IoSlice<'_>> = parts
        .into_iter()
        .map(|p| match p {
            Ok(range) => IoSlice::new(&scratch[range]),
            Err(record) => IoSlice::new(record),
        })
        .collect();
    write_all_vectored(w, &mut slices)
}

/// Writes all of `slices`, in as many vectored writes as it takes.
fn write_all_vectored<W: Write>(w: &mut W, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut bufs = slices;
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

/// Reads the frames of one stream. Small frames come in many to a system call through a
/// buffer; a large payload is read straight into a vector of its own, in reads of all that is
/// still missing. Every payload is its own buffer, so `Bytes` records decoded from it keep
/// only their own frame alive. A large payload's buffer comes back to the reader once the
/// last of them is dropped, and the next one is read into it without zeroing it first.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    payloads: Arc<BlobPool>,
}

/// Read buffer of a connection: hundreds of small frames (credits, watermarks) per system
/// call, yet small enough that a big frame's bytes that were read ahead into it and must be
/// copied out are a few percent of the frame (a quarter of a batch frame at 32 KiB).
const READ_BUFFER: usize = 8 << 10;

/// Payloads at least this long are read into buffers used again (see [`FrameReader`]);
/// zeroing a shorter one costs less than the pool's lock.
const POOLED_PAYLOAD_MIN: usize = 16 << 10;

/// Bytes of free payload buffers a reader keeps for frames to come: a few windows of credits
/// worth of batch frames, and little for an idle worker to hold once its job is gone.
const KEPT_PAYLOAD_BYTES: usize = 4 << 20;

/// Room a new payload buffer has beyond its frame, so that the next frame of a channel, a
/// little longer, still fits it.
const PAYLOAD_SPARE: usize = 4 << 10;

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner: BufReader::with_capacity(READ_BUFFER, inner),
            payloads: Arc::new(BlobPool::with_limit(KEPT_PAYLOAD_BYTES)),
        }
    }

    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// Reads one frame; a clean end of stream before it is `UnexpectedEof`.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let mut h = [0u8; HEADER_LEN];
        self.inner.read_exact(&mut h)?;
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        if !(1 + CHANNEL_ID_LEN..=MAX_FRAME_LEN).contains(&len) {
            return Err(invalid(format!("bad frame length {len}")));
        }
        let kind = Kind::from_u8(h[4])?;
        let ch = channel_id(&h[5..]);
        let n = len - 1 - CHANNEL_ID_LEN;
        if n == 0 {
            let payload = Bytes::new();
            return Ok(Frame { kind, ch, payload });
        }
        // Filled first (zeroed, or a used buffer's old bytes), so the rest is read with plain
        // reads of all that is missing: one or two system calls per frame where `read_to_end`
        // would ramp up from small reads.
        let pooled = n >= POOLED_PAYLOAD_MIN;
        let mut payload = if pooled {
            self.payloads.take_filled(n, PAYLOAD_SPARE)
        } else {
            vec![0u8; n]
        };
        let buffered = self.inner.buffer();
        let k = buffered.len().min(n);
        payload[..k].copy_from_slice(&buffered[..k]);
        self.inner.consume(k);
        if k < n {
            self.inner.get_mut().read_exact(&mut payload[k..])?;
        }
        let payload = if pooled {
            self.payloads.shared(payload)
        } else {
            Bytes::from(payload)
        };
        Ok(Frame { kind, ch, payload })
    }
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

    fn ch() -> ChannelId {
        ChannelId {
            attempt: u64::MAX - 1,
            node: 7,
            input: 1,
            producer: 3,
            consumer: 70_000,
        }
    }

    /// A stream that hands out at most `step` bytes per read, as a socket may.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn frames_round_trip_small_and_large() {
        let ch = ch();
        // Larger than the read buffer, so mostly read straight into its vector.
        let big: Vec<u8> = (0..(READ_BUFFER + 200_000) as u32)
            .map(|i| i as u8)
            .collect();
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
        for step in [7, 1000, usize::MAX] {
            let mut r = FrameReader::new(Trickle { data: &wire, step });
            let f = r.read_frame().unwrap();
            assert_eq!(
                (f.kind, f.ch, parse_credit(&f.payload).unwrap()),
                (Kind::Credit, ch, 4)
            );
            let f = r.read_frame().unwrap();
            assert_eq!((f.kind, f.ch), (Kind::Data, ch));
            assert_eq!(f.payload, big);
            let f = r.read_frame().unwrap();
            assert_eq!((f.kind, f.payload.len()), (Kind::Close, 0));
            let eof = r.read_frame().unwrap_err();
            assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn payloads_stay_intact_while_the_reader_goes_on() {
        // Many frames of all sizes, every payload kept until the end: none may share memory
        // the reader writes to later.
        let ch = ch();
        let frames: Vec<Vec<u8>> = (0..200u32)
            .map(|i| vec![i as u8; (i as usize * 7919) % 70_000])
            .collect();
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        for f in &frames {
            write_frame(&mut wire, &mut scratch, Kind::Data, &ch, f).unwrap();
        }
        for step in [1000, 50_000] {
            let mut r = FrameReader::new(Trickle { data: &wire, step });
            let kept: Vec<Bytes> = frames
                .iter()
                .map(|_| r.read_frame().unwrap().payload)
                .collect();
            assert_eq!(kept, frames);
        }
    }

    /// A large payload's buffer serves a later frame once every slice of it was dropped, and
    /// holds that frame's bytes alone; a payload still alive is never read into.
    #[test]
    fn dropped_payloads_buffers_serve_later_frames() {
        let ch = ch();
        let sizes = [40_000, 39_000, 41_000, 100, 40_500];
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            write_frame(
                &mut wire,
                &mut scratch,
                Kind::Data,
                &ch,
                &vec![i as u8 + 1; *n],
            )
            .unwrap();
        }
        let mut r = FrameReader::new(Trickle {
            data: &wire,
            step: 7000,
        });
        let first = r.read_frame().unwrap().payload;
        let address = first.as_ptr();
        let kept = first.slice(10..20);
        drop(first);
        let second = r.read_frame().unwrap().payload;
        assert_ne!(
            second.as_ptr(),
            address,
            "a slice still holds the first buffer"
        );
        assert_eq!(second, vec![2; 39_000]);
        drop(kept);
        drop(second);
        let third = r.read_frame().unwrap().payload;
        assert_eq!(third, vec![3; 41_000]);
        let small = r.read_frame().unwrap().payload;
        assert_eq!(small, vec![4; 100]);
        let fifth = r.read_frame().unwrap().payload;
        assert_eq!(fifth, vec![5; 40_500]);
        let reused = [third.as_ptr(), fifth.as_ptr()];
        assert!(
            reused.contains(&address),
            "the first buffer is used again once its slices are gone"
        );
    }

    #[test]
    fn records_are_written_in_place_or_copied_alike() {
        let ch = ch();
        let head = b"head".to_vec();
        let tail: Vec<Bytes> = [0usize, 1, 100, OWN_SLICE_LEN, 5000, 3, 70_000, 2]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
            .collect();
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        write_frame_parts(&mut wire, &mut scratch, Kind::Data, &ch, &head, &tail).unwrap();
        write_frame_parts(&mut wire, &mut scratch, Kind::Data, &ch, &head, &[]).unwrap();
        let mut r = FrameReader::new(&wire[..]);
        let f = r.read_frame().unwrap();
        let mut expected = head.clone();
        tail.iter().for_each(|t| expected.extend_from_slice(t));
        assert_eq!((f.kind, f.ch), (Kind::Data, ch));
        assert_eq!(f.payload, expected);
        assert_eq!(r.read_frame().unwrap().payload, head);
    }

    #[test]
    fn copies_behind_the_header_keep_their_sources_line_offset() {
        let ch = ch();
        let source: Vec<u8> = (0..COALESCE_LEN as u32 + 200).map(|i| i as u8).collect();
        let records = [
            Bytes::from_static(b"abc"),
            Bytes::from(vec![5u8; OWN_SLICE_LEN]),
        ];
        let mut scratch = Vec::new();
        // Heads and payloads starting at every offset within a line, and a head too large to
        // be copied at all: the frames are the same bytes whatever the lead.
        for start in (0..LINE).chain([100, 199]) {
            for len in [0, 1, 4000, COALESCE_LEN, COALESCE_LEN + 1] {
                let part = &source[start..start + len];
                let mut wire = Vec::new();
                write_frame(&mut wire, &mut scratch, Kind::Data, &ch, part).unwrap();
                write_frame_parts(&mut wire, &mut scratch, Kind::Data, &ch, part, &records)
                    .unwrap();
                let mut r = FrameReader::new(&wire[..]);
                assert_eq!(r.read_frame().unwrap().payload, part);
                let mut expected = part.to_vec();
                records.iter().for_each(|t| expected.extend_from_slice(t));
                assert_eq!(
                    r.read_frame().unwrap().payload,
                    expected,
                    "start {start} len {len}"
                );
                if len > 0 && len <= COALESCE_LEN {
                    // The head's copy in `scratch` sits at its source's offset in a line.
                    let lead = copy_lead(&scratch, part);
                    let copy = scratch.as_ptr() as usize + lead + HEADER_LEN;
                    assert_eq!(copy.wrapping_sub(part.as_ptr() as usize) % LINE, 0);
                    assert_eq!(&scratch[lead + HEADER_LEN..][..len], part);
                }
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        let ch = ch();
        let mut bad = header(Kind::Data, &ch, 0);
        bad[4] = 9;
        assert!(FrameReader::new(&bad[..]).read_frame().is_err());
        let mut huge = bad;
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(FrameReader::new(&huge[..]).read_frame().is_err());
        let mut short = header(Kind::Data, &ch, 0);
        short[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(FrameReader::new(&short[..]).read_frame().is_err());
        let truncated = &header(Kind::Data, &ch, 10)[..];
        let err = FrameReader::new(truncated).read_frame().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
