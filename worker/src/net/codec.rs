//! How events are encoded in data frames: a tag byte, then either a compact layout for batches
//! of the most common record types (`String`, `Vec<u8>`) or bincode of the whole `Event<T>`
//! for everything else (watermarks, barriers, end of input, any other record type).
//!
//! The compact layout exists because bincode spends most of a string batch's decode time
//! validating every record's UTF-8 on its own: here the lengths come first and all the bytes
//! after them, so one validation pass covers the whole batch and each record is then one
//! allocation and one copy. Both ends run the same job binary, so they agree on `T`; a tag that
//! does not fit the channel's type is refused as corrupt rather than trusted.
//!
//! `Bytes` records use the same layout but are not copied on decode at all: the received frame
//! becomes one `Bytes` and every record is a slice of it ([`decode_frame`]). The frame's memory
//! then lives until the last of its records is dropped.

use std::any::Any;
use std::ops::Range;

use bytes::Bytes;

use crate::data::{Batch, Data, Event};

/// Payload is `bincode(Event<T>)`.
const TAG_SERDE: u8 = 0;
/// Payload is a batch of `String` records in the compact layout.
const TAG_STRINGS: u8 = 1;
/// Payload is a batch of `Vec<u8>` records in the compact layout.
const TAG_BYTES: u8 = 2;
/// Payload is a batch of `Bytes` records in the compact layout.
const TAG_SHARED: u8 = 3;

/// Compact layout after the tag: record count u32, whether timestamps follow u8, one u32 length
/// per record, one i64 timestamp per record if they follow, then every record's bytes.
const COMPACT_HEAD: usize = 4 + 1;

/// A batch the compact layout can carry (timestamps for none or all records, a count that
/// fits in u32): its records, for the caller to downcast, and their timestamps.
fn compact_batch<T: Data>(ev: &Event<T>) -> Option<(&dyn Any, &[i64])> {
    match ev {
        Event::Batch(b)
            if (b.ts.is_empty() || b.ts.len() == b.data.len())
                && u32::try_from(b.data.len()).is_ok() =>
        {
            Some((&b.data as &dyn Any, &b.ts[..]))
        }
        _ => None,
    }
}

/// Appends the encoding of `ev` to `buf`.
pub fn encode<T: Data>(ev: &Event<T>, buf: &mut Vec<u8>) -> Result<(), String> {
    if let Some((data, ts)) = compact_batch(ev) {
        if let Some(strings) = data.downcast_ref::<Vec<String>>() {
            buf.push(TAG_STRINGS);
            return encode_compact(strings.iter().map(String::as_bytes), ts, buf);
        }
        if let Some(bytes) = data.downcast_ref::<Vec<Vec<u8>>>() {
            buf.push(TAG_BYTES);
            return encode_compact(bytes.iter().map(Vec::as_slice), ts, buf);
        }
        if let Some(shared) = data.downcast_ref::<Vec<Bytes>>() {
            buf.push(TAG_SHARED);
            return encode_compact(shared.iter().map(Bytes::as_ref), ts, buf);
        }
    }
    buf.push(TAG_SERDE);
    bincode::serialize_into(buf, ev).map_err(|e| e.to_string())
}

/// Appends the encoding of `ev` to `buf` except for the records' bytes when `ev` is a batch of
/// `Bytes`: those records are returned instead, for their bytes to be written right behind
/// `buf` (see [`super::frame::write_frame_parts`]), so that large records are never copied.
/// `buf` followed by the records' bytes is then exactly what [`encode`] writes. For every other
/// event `buf` gets the whole encoding and the result is `None`.
pub fn encode_vectored<'a, T: Data>(
    ev: &'a Event<T>,
    buf: &mut Vec<u8>,
) -> Result<Option<&'a [Bytes]>, String> {
    if let Some((data, ts)) = compact_batch(ev)
        && let Some(shared) = data.downcast_ref::<Vec<Bytes>>()
    {
        buf.push(TAG_SHARED);
        encode_compact_head(shared.iter().map(Bytes::as_ref), ts, buf)?;
        return Ok(Some(shared));
    }
    encode(ev, buf)?;
    Ok(None)
}

fn encode_compact<'a, I>(records: I, ts: &[i64], buf: &mut Vec<u8>) -> Result<(), String>
where
    I: Iterator<Item = &'a [u8]> + Clone + ExactSizeIterator,
{
    let total = encode_compact_head(records.clone(), ts, buf)?;
    buf.reserve(total);
    for r in records {
        buf.extend_from_slice(r);
    }
    Ok(())
}

/// Appends the compact layout up to the records' bytes; returns how many bytes they take.
fn encode_compact_head<'a, I>(records: I, ts: &[i64], buf: &mut Vec<u8>) -> Result<usize, String>
where
    I: Iterator<Item = &'a [u8]> + ExactSizeIterator,
{
    let n = records.len();
    buf.reserve(COMPACT_HEAD + n * 4 + ts.len() * 8);
    buf.extend_from_slice(&(n as u32).to_le_bytes());
    buf.push(u8::from(!ts.is_empty()));
    let mut total = 0usize;
    for r in records {
        let len = u32::try_from(r.len()).map_err(|_| format!("a record of {} bytes", r.len()))?;
        buf.extend_from_slice(&len.to_le_bytes());
        total += r.len();
    }
    for t in ts {
        buf.extend_from_slice(&t.to_le_bytes());
    }
    Ok(total)
}

/// Decodes one event encoded by [`encode`] for the same `T` from a received payload. A batch
/// of `Bytes` keeps the payload: its records are slices of it.
pub fn decode_frame<T: Data>(payload: Bytes) -> Result<Event<T>, String> {
    if payload.first() == Some(&TAG_SHARED) {
        return decode_shared(payload);
    }
    decode(&payload)
}

/// Decodes one event encoded by [`encode`] for the same `T`. A batch of `Bytes` costs one copy
/// of the whole payload here; [`decode_frame`] avoids even that.
pub fn decode<T: Data>(payload: &[u8]) -> Result<Event<T>, String> {
    let (&tag, rest) = payload.split_first().ok_or("an empty frame")?;
    match tag {
        TAG_SERDE => bincode::deserialize(rest).map_err(|e| e.to_string()),
        TAG_STRINGS => {
            let c = Compact::parse(rest)?;
            let text = std::str::from_utf8(c.bytes).map_err(|e| format!("a string record: {e}"))?;
            let mut data = Vec::with_capacity(c.count());
            for span in c.spans() {
                // `get` also refuses a split inside a character, so every record is valid UTF-8.
                let s = text.get(span).ok_or("a string record cut mid-character")?;
                data.push(s.to_owned());
            }
            batch_of(data, c.ts)
        }
        TAG_BYTES => {
            let c = Compact::parse(rest)?;
            let data = c.spans().map(|span| c.bytes[span].to_vec()).collect();
            batch_of::<Vec<u8>, T>(data, c.ts)
        }
        TAG_SHARED => decode_shared(Bytes::copy_from_slice(payload)),
        t => Err(format!("unknown event tag {t}")),
    }
}

/// A batch of `Bytes` records sliced out of `payload` (tag included): no allocation or copy
/// per record, each record holds a reference to `payload`.
fn decode_shared<T: Data>(payload: Bytes) -> Result<Event<T>, String> {
    let c = Compact::parse(&payload[1..])?;
    // The records' bytes end the payload; spans are relative to where they start.
    let base = payload.len() - c.bytes.len();
    let data = c
        .spans()
        .map(|span| payload.slice(base + span.start..base + span.end))
        .collect();
    batch_of::<Bytes, T>(data, c.ts)
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

/// A compact batch split into its parts.
struct Compact<'a> {
    /// One little-endian u32 per record.
    lens: &'a [u8],
    ts: Vec<i64>,
    /// Every record's bytes, back to back.
    bytes: &'a [u8],
}

impl<'a> Compact<'a> {
    /// Splits the payload after the tag, checking that the lengths add up to exactly the
    /// bytes there are (so every span below is in bounds).
    fn parse(p: &'a [u8]) -> Result<Compact<'a>, String> {
        let bad = || format!("a compact batch of {} bytes is malformed", p.len());
        if p.len() < COMPACT_HEAD {
            return Err(bad());
        }
        let n = u32_at(&p[0..4]) as usize;
        let ts_len = match p[4] {
            0 => 0,
            1 => n * 8,
            _ => return Err(bad()),
        };
        let lens_end = COMPACT_HEAD + n * 4;
        let ts_end = lens_end + ts_len;
        if p.len() < ts_end {
            return Err(bad());
        }
        let lens = &p[COMPACT_HEAD..lens_end];
        let total: u64 = lens.chunks_exact(4).map(|l| u64::from(u32_at(l))).sum();
        let bytes = &p[ts_end..];
        if total != bytes.len() as u64 {
            return Err(bad());
        }
        let ts = p[lens_end..ts_end]
            .chunks_exact(8)
            .map(|t| i64::from_le_bytes(t.try_into().expect("8 bytes")))
            .collect();
        Ok(Compact { lens, ts, bytes })
    }

    fn count(&self) -> usize {
        self.lens.len() / 4
    }

    /// Where each record's bytes are in `bytes`.
    fn spans(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut at = 0usize;
        self.lens.chunks_exact(4).map(move |l| {
            let start = at;
            at += u32_at(l) as usize;
            start..at
        })
    }
}

/// The batch event of `data` as the channel's record type, which the tag said it is.
fn batch_of<R: 'static, T: Data>(data: Vec<R>, ts: Vec<i64>) -> Result<Event<T>, String> {
    let boxed: Box<dyn Any> = Box::new(data);
    match boxed.downcast::<Vec<T>>() {
        Ok(data) => Ok(Event::Batch(Batch { data: *data, ts })),
        Err(_) => Err(format!(
            "a batch of {} records on a channel of {}",
            std::any::type_name::<R>(),
            std::any::type_name::<T>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Barrier, BarrierKind};

    fn round_trip<T: Data + PartialEq + std::fmt::Debug>(ev: Event<T>) -> (u8, Event<T>) {
        let mut buf = vec![9, 9];
        encode(&ev, &mut buf).unwrap();
        let back: Event<T> = decode(&buf[2..]).unwrap();
        (buf[2], back)
    }

    fn batch_eq<T: PartialEq + std::fmt::Debug>(a: &Event<T>, b: &Event<T>) {
        match (a, b) {
            (Event::Batch(x), Event::Batch(y)) => assert_eq!(x, y),
            _ => panic!("not both batches: {a:?} {b:?}"),
        }
    }

    #[test]
    fn string_and_byte_batches_use_the_compact_layout() {
        let ev = Event::Batch(Batch::from_vec(vec![
            "héllo".to_string(),
            String::new(),
            "✓ ok".to_string(),
        ]));
        let (tag, back) = round_trip(ev.clone());
        assert_eq!(tag, TAG_STRINGS);
        batch_eq(&ev, &back);

        let mut timed = Batch::default();
        timed.push(vec![1u8, 2, 3], Some(5));
        timed.push(vec![], Some(-7));
        let ev = Event::Batch(timed);
        let (tag, back) = round_trip(ev.clone());
        assert_eq!(tag, TAG_BYTES);
        batch_eq(&ev, &back);
    }

    #[test]
    fn bytes_batches_are_slices_of_the_frame() {
        let mut timed = Batch::default();
        timed.push(Bytes::from_static(b"first"), Some(1));
        timed.push(Bytes::new(), Some(2));
        timed.push(Bytes::from(vec![0u8, 255, 7]), Some(-3));
        let ev = Event::Batch(timed);
        let (tag, back) = round_trip(ev.clone());
        assert_eq!(tag, TAG_SHARED);
        batch_eq(&ev, &back);

        let mut frame = Vec::new();
        encode(&ev, &mut frame).unwrap();
        let frame = Bytes::from(frame);
        let span = frame.as_ptr_range();
        let back = decode_frame::<Bytes>(frame).unwrap();
        batch_eq(&ev, &back);
        let Event::Batch(b) = back else {
            panic!("not a batch")
        };
        for r in b.data.iter().filter(|r| !r.is_empty()) {
            assert!(
                span.contains(&r.as_ptr()),
                "record {r:?} was copied out of the frame"
            );
        }
        // Records outlive each other and the batch: each holds the frame on its own.
        let first = b.data[0].clone();
        drop(b);
        assert_eq!(&first[..], b"first");

        // Other events and record types decode from a frame as well.
        let mut frame = Vec::new();
        encode(&Event::<Bytes>::Watermark(8), &mut frame).unwrap();
        let back = decode_frame::<Bytes>(frame.into()).unwrap();
        assert!(matches!(back, Event::Watermark(8)));
        let mut frame = Vec::new();
        encode(
            &Event::Batch(Batch::from_vec(vec!["s".to_string()])),
            &mut frame,
        )
        .unwrap();
        let back = decode_frame::<String>(frame.into()).unwrap();
        batch_eq(&back, &Event::Batch(Batch::from_vec(vec!["s".to_string()])));
    }

    #[test]
    fn vectored_encoding_leaves_only_bytes_records_out() {
        let mut timed = Batch::default();
        timed.push(Bytes::from_static(b"first"), Some(1));
        timed.push(Bytes::new(), Some(2));
        timed.push(Bytes::from(vec![9u8; 3000]), Some(3));
        let bytes_batch = Event::Batch(timed);
        let mut whole = Vec::new();
        encode(&bytes_batch, &mut whole).unwrap();
        let mut head = vec![7];
        let tail = encode_vectored(&bytes_batch, &mut head).unwrap().unwrap();
        assert_eq!(tail.len(), 3, "the records are left to the writer");
        let mut joined = head[1..].to_vec();
        tail.iter().for_each(|r| joined.extend_from_slice(r));
        assert_eq!(joined, whole);

        // Everything else is encoded whole.
        let strings = Event::Batch(Batch::from_vec(vec!["a".to_string(), "bc".to_string()]));
        for ev in [&Event::<Bytes>::Watermark(3), &Event::EndOfInput] {
            let (mut whole, mut head) = (Vec::new(), Vec::new());
            encode(ev, &mut whole).unwrap();
            assert!(encode_vectored(ev, &mut head).unwrap().is_none());
            assert_eq!(head, whole);
        }
        let (mut whole, mut head) = (Vec::new(), Vec::new());
        encode(&strings, &mut whole).unwrap();
        assert!(encode_vectored(&strings, &mut head).unwrap().is_none());
        assert_eq!(head, whole);
    }

    #[test]
    fn refuses_corrupt_or_mistyped_bytes_batches() {
        let ev = Event::Batch(Batch::from_vec(vec![
            Bytes::from_static(b"ab"),
            Bytes::from_static(b"cde"),
        ]));
        let mut buf = Vec::new();
        encode(&ev, &mut buf).unwrap();
        let lens = 1 + COMPACT_HEAD;
        let frame = |b: &[u8]| Bytes::copy_from_slice(b);
        // Lengths that no longer add up to the bytes there are.
        let mut bad = buf.clone();
        bad[lens] = 4;
        let err = decode_frame::<Bytes>(frame(&bad)).unwrap_err();
        assert!(err.contains("malformed"), "{err}");
        assert!(decode::<Bytes>(&bad).is_err());
        // Truncated, and a count far beyond the payload.
        assert!(decode_frame::<Bytes>(frame(&buf[..buf.len() - 1])).is_err());
        assert!(decode_frame::<Bytes>(frame(&buf[..3])).is_err());
        let mut bad = buf.clone();
        bad[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_frame::<Bytes>(frame(&bad)).is_err());
        // A bad timestamp flag.
        let mut bad = buf.clone();
        bad[5] = 2;
        assert!(decode_frame::<Bytes>(frame(&bad)).is_err());
        // A batch of `Bytes` on a channel of another type, and the other way round.
        let err = decode_frame::<Vec<u8>>(frame(&buf)).unwrap_err();
        assert!(err.contains("on a channel of"), "{err}");
        let err = decode::<String>(&buf).unwrap_err();
        assert!(err.contains("on a channel of"), "{err}");
        let mut strings = Vec::new();
        encode(
            &Event::Batch(Batch::from_vec(vec!["x".to_string()])),
            &mut strings,
        )
        .unwrap();
        let err = decode_frame::<Bytes>(frame(&strings)).unwrap_err();
        assert!(err.contains("on a channel of"), "{err}");
        assert!(decode_frame::<Bytes>(Bytes::new()).is_err());
        // Intact, it still decodes.
        let back = decode_frame::<Bytes>(frame(&buf)).unwrap();
        batch_eq(&ev, &back);
    }

    #[test]
    fn other_events_and_types_go_through_serde() {
        let ev = Event::Batch(Batch::from_vec(vec![("a".to_string(), 3u64)]));
        let (tag, back) = round_trip(ev.clone());
        assert_eq!(tag, TAG_SERDE);
        batch_eq(&ev, &back);
        let barrier = Barrier {
            checkpoint_id: 4,
            timestamp_ms: 9,
            kind: BarrierKind::Checkpoint,
        };
        let (tag, back) = round_trip(Event::<String>::Barrier(barrier));
        assert_eq!(tag, TAG_SERDE);
        assert!(matches!(back, Event::Barrier(b) if b == barrier));
        let (_, back) = round_trip(Event::<String>::Watermark(-3));
        assert!(matches!(back, Event::Watermark(-3)));
        let (_, back) = round_trip(Event::<Vec<u8>>::EndOfInput);
        assert!(matches!(back, Event::EndOfInput));
        let (_, back) = round_trip(Event::<String>::Idle(true));
        assert!(matches!(back, Event::Idle(true)));
    }

    #[test]
    fn refuses_corrupt_or_mistyped_batches() {
        let mut buf = Vec::new();
        encode(
            &Event::Batch(Batch::from_vec(vec!["ab".to_string(), "é".to_string()])),
            &mut buf,
        )
        .unwrap();
        // Lengths 2 and 2 → 3 and 1: the split falls inside 'é'.
        let lens = 1 + COMPACT_HEAD;
        buf[lens] = 3;
        buf[lens + 4] = 1;
        let err = decode::<String>(&buf).unwrap_err();
        assert!(err.contains("mid-character"), "{err}");
        buf[lens] = 2;
        buf[lens + 4] = 2;
        // A string batch for a channel of byte records.
        let err = decode::<Vec<u8>>(&buf).unwrap_err();
        assert!(err.contains("on a channel of"), "{err}");
        // Invalid UTF-8 and truncation.
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() = 0xff;
        assert!(decode::<String>(&bad).is_err());
        assert!(decode::<String>(&buf[..buf.len() - 1]).is_err());
        assert!(decode::<String>(&[]).is_err());
        assert!(decode::<String>(&[7]).is_err());
    }
}
