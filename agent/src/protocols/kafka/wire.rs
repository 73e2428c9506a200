//! Kafka's wire format, decoded from a message's kept bytes: request and response headers,
//! Produce requests and responses, Fetch responses, Metadata responses (topic ids to names)
//! and v2 record batches. Pure functions; a truncated or malformed input ends the decoding
//! where it stops making sense (what was decoded before stays), never a panic.
//!
//! Versions follow Kafka's message definitions: a version at or above an API's "flexible"
//! version uses compact (varint-length) strings, arrays and bytes, and tagged fields.

/// API keys parsed here.
pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const METADATA: i16 = 3;
pub const API_VERSIONS: i16 = 18;
/// The highest API key a client sends today (with room for new ones).
pub const MAX_API_KEY: i16 = 90;
/// The highest version of any API today, with room.
pub const MAX_API_VERSION: i16 = 30;

/// Whether `version` of `api_key` uses the flexible encoding (and header versions 2 / 1).
pub fn flexible(api_key: i16, version: i16) -> bool {
    match api_key {
        PRODUCE => version >= 9,
        FETCH => version >= 12,
        METADATA => version >= 9,
        API_VERSIONS => version >= 3,
        // Not decoded here: their bodies are skipped whole.
        _ => false,
    }
}

/// Versions past the newest Kafka defines for the APIs clients send most (Kafka 4.1).
fn version_too_new(api_key: i16, version: i16) -> bool {
    let newest = match api_key {
        PRODUCE => 13,
        FETCH => 18,
        2 => 10, // ListOffsets
        METADATA => 13,
        8 => 10, // OffsetCommit
        9 => 10, // OffsetFetch
        10 => 6, // FindCoordinator
        11 => 9, // JoinGroup
        12 => 4, // Heartbeat
        13 => 5, // LeaveGroup
        14 => 5, // SyncGroup
        API_VERSIONS => 4,
        19 => 7, // CreateTopics
        22 => 5, // InitProducerId
        _ => MAX_API_VERSION,
    };
    version > newest
}

/// A cursor over bytes; every read is checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub fn i8(&mut self) -> Option<i8> {
        Some(i8::from_be_bytes(self.array()?))
    }
    pub fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.array()?))
    }
    pub fn uuid(&mut self) -> Option<[u8; 16]> {
        self.array()
    }

    /// An unsigned LEB128 varint (at most 10 bytes).
    pub fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A zigzag varint (record fields).
    pub fn varint(&mut self) -> Option<i64> {
        let v = self.uvarint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A length that must fit in what is left (each item takes a byte at least), so a
    /// hostile count never drives a long loop.
    fn bounded(&self, n: u64) -> Option<usize> {
        let n = usize::try_from(n).ok()?;
        (n <= self.buf.len().saturating_sub(self.pos)).then_some(n)
    }

    /// A (nullable) string or byte array: int16 length for strings, int32 for bytes, or a
    /// compact length (varint of length + 1; 0 is null). `Some(None)`: null.
    pub fn string(&mut self, compact: bool) -> Option<Option<&'a [u8]>> {
        let len = if compact { self.uvarint()? as i64 - 1 } else { i64::from(self.i16()?) };
        self.sized(len)
    }
    pub fn bytes(&mut self, compact: bool) -> Option<Option<&'a [u8]>> {
        let len = if compact { self.uvarint()? as i64 - 1 } else { i64::from(self.i32()?) };
        self.sized(len)
    }
    fn sized(&mut self, len: i64) -> Option<Option<&'a [u8]>> {
        if len < 0 {
            return Some(None);
        }
        let n = self.bounded(len as u64)?;
        self.take(n).map(Some)
    }

    /// An array's item count (null counts as none).
    pub fn array_len(&mut self, compact: bool) -> Option<usize> {
        let n = if compact { self.uvarint()? as i64 - 1 } else { i64::from(self.i32()?) };
        if n <= 0 { Some(0) } else { self.bounded(n as u64) }
    }

    /// Tagged fields (flexible versions), skipped.
    pub fn tagged_fields(&mut self) -> Option<()> {
        let n = self.uvarint()?;
        for _ in 0..self.bounded(n)? {
            self.uvarint()?;
            let size = self.uvarint()?;
            let size = self.bounded(size)?;
            self.take(size)?;
        }
        Some(())
    }

    fn tagged_if(&mut self, flexible: bool) -> Option<()> {
        if flexible { self.tagged_fields() } else { Some(()) }
    }
}

/// A request's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// The header of a request (the bytes after the size), and the body's offset. The client id
/// is a nullable int16 string in every header version; version 2 adds tagged fields.
pub fn request_header(msg: &[u8]) -> Option<(RequestHeader, usize)> {
    let mut r = Reader::new(msg);
    let header = RequestHeader { api_key: r.i16()?, api_version: r.i16()?, correlation_id: r.i32()? };
    if !(0..=MAX_API_KEY).contains(&header.api_key) || !(0..=MAX_API_VERSION).contains(&header.api_version) {
        return None;
    }
    let client_id = r.string(false)?;
    if client_id.is_some_and(|id| !id.iter().all(|b| b.is_ascii_graphic() || *b == b' ')) {
        return None;
    }
    if version_too_new(header.api_key, header.api_version) {
        return None;
    }
    r.tagged_if(flexible(header.api_key, header.api_version))?;
    Some((header, r.pos))
}

/// A topic as the wire names it: by name, or (newer versions) by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic<'a> {
    Name(&'a [u8]),
    Id([u8; 16]),
}

/// A record of a v2 batch. Key and value are borrowed, never kept past the parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// The records of one partition in a request or a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSet<'a> {
    pub records: Vec<Record<'a>>,
    /// Records a batch header announced that were not decoded: compressed, old formats, or
    /// past the bytes kept.
    pub undecoded: u64,
    /// Batches whose header said magic 2 (the format since Kafka 0.11).
    pub batches: u32,
}

/// Batches back to back (`records` of a partition). A batch cut short (the capture, or a
/// broker that ends a fetch mid-batch) counts its records as undecoded.
pub fn record_batches(mut bytes: &[u8]) -> RecordSet<'_> {
    let mut set = RecordSet::default();
    // baseOffset (8) + batchLength (4): the batch's size follows.
    while bytes.len() >= 12 {
        let mut r = Reader::new(bytes);
        let (Some(base_offset), Some(batch_len)) = (r.i64(), r.i32()) else { break };
        let batch_end = 12usize.saturating_add(batch_len.max(0) as usize);
        let batch = &bytes[..batch_end.min(bytes.len())];
        decode_batch(batch, base_offset, &mut set);
        if batch_end > bytes.len() {
            break;
        }
        bytes = &bytes[batch_end..];
    }
    set
}

/// One batch: header (61 bytes in magic 2), then its records unless compressed.
fn decode_batch<'a>(batch: &'a [u8], base_offset: i64, set: &mut RecordSet<'a>) {
    let mut r = Reader::new(batch);
    // baseOffset, batchLength, partitionLeaderEpoch.
    let Some(_) = r.take(16) else { return };
    let Some(magic) = r.i8() else { return };
    if magic == 2 {
        set.batches += 1;
    }
    // crc, then attributes.
    let (Some(_), Some(attributes)) = (r.take(4), r.i16()) else { return };
    // lastOffsetDelta, baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence.
    let (Some(_), Some(count)) = (r.take(4 + 8 + 8 + 8 + 2 + 4), r.i32()) else { return };
    let count = count.max(0) as u64;
    // Compressed (codec in the low 3 bits), or a control batch (bit 5, transaction markers).
    if magic != 2 || attributes & 0x07 != 0 || attributes & 0x20 != 0 {
        set.undecoded += if attributes & 0x20 != 0 { 0 } else { count };
        return;
    }
    let mut decoded = 0u64;
    while decoded < count {
        let Some(record) = decode_record(&mut r, base_offset) else { break };
        set.records.push(record);
        decoded += 1;
    }
    set.undecoded += count - decoded;
}

fn decode_record<'a>(r: &mut Reader<'a>, base_offset: i64) -> Option<Record<'a>> {
    let len = r.varint()?;
    let body = r.take(usize::try_from(len).ok()?)?;
    let mut r = Reader::new(body);
    r.i8()?; // attributes
    r.varint()?; // timestampDelta
    let offset_delta = r.varint()?;
    let key = varint_bytes(&mut r)?;
    let value = varint_bytes(&mut r)?;
    let n = r.varint()?;
    let mut headers = Vec::new();
    for _ in 0..r.bounded(n.max(0) as u64)? {
        let name = varint_bytes(&mut r)?.unwrap_or_default();
        headers.push((name, varint_bytes(&mut r)?));
    }
    Some(Record { offset: base_offset.wrapping_add(offset_delta), key, value, headers })
}

/// Record fields: a zigzag varint length (−1: null), then the bytes.
fn varint_bytes<'a>(r: &mut Reader<'a>) -> Option<Option<&'a [u8]>> {
    let len = r.varint()?;
    r.sized(len)
}

/// The records of one partition of a Produce request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducePartition<'a> {
    pub topic: Topic<'a>,
    pub partition: i32,
    pub records: RecordSet<'a>,
}

/// A Produce request's body (versions 3 and up: record batches v2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Produce<'a> {
    pub acks: i16,
    pub partitions: Vec<ProducePartition<'a>>,
}

pub fn produce_request(body: &[u8], version: i16) -> Option<Produce<'_>> {
    let compact = flexible(PRODUCE, version);
    let mut r = Reader::new(body);
    if version >= 3 {
        r.string(compact)?; // transactional_id
    }
    let mut produce = Produce { acks: r.i16()?, partitions: Vec::new() };
    r.i32()?; // timeout_ms
    let topics = r.array_len(compact)?;
    for _ in 0..topics {
        let Some(topic) = topic(&mut r, version >= 13, compact) else { break };
        let Some(n) = r.array_len(compact) else { break };
        for _ in 0..n {
            let Some(partition) = r.i32() else { return Some(produce) };
            // A set cut by the capture still gives the records before the cut.
            let records = match r.bytes(compact) {
                Some(bytes) => record_batches(bytes.unwrap_or_default()),
                None => record_batches(r.rest()),
            };
            produce.partitions.push(ProducePartition { topic, partition, records });
            if r.tagged_if(compact).is_none() {
                return Some(produce);
            }
        }
        if r.tagged_if(compact).is_none() {
            break;
        }
    }
    Some(produce)
}

fn topic<'a>(r: &mut Reader<'a>, by_id: bool, compact: bool) -> Option<Topic<'a>> {
    if by_id { r.uuid().map(Topic::Id) } else { r.string(compact)?.map(Topic::Name) }
}

/// A partition's outcome in a Produce response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Produced<'a> {
    pub topic: Topic<'a>,
    pub partition: i32,
    pub error_code: i16,
    pub base_offset: i64,
}

pub fn produce_response(body: &[u8], version: i16) -> Vec<Produced<'_>> {
    let compact = flexible(PRODUCE, version);
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    let Some(topics) = r.array_len(compact) else { return out };
    for _ in 0..topics {
        let Some(topic) = topic(&mut r, version >= 13, compact) else { break };
        let Some(n) = r.array_len(compact) else { break };
        for _ in 0..n {
            let (Some(partition), Some(error_code), Some(base_offset)) = (r.i32(), r.i16(), r.i64()) else { return out };
            out.push(Produced { topic, partition, error_code, base_offset });
            if skip_produce_partition_tail(&mut r, version, compact).is_none() {
                return out;
            }
        }
        if r.tagged_if(compact).is_none() {
            break;
        }
    }
    out
}

/// After a Produce response partition's base offset: log_append_time, log_start_offset,
/// record errors, error message, tagged fields.
fn skip_produce_partition_tail(r: &mut Reader<'_>, version: i16, compact: bool) -> Option<()> {
    if version >= 2 {
        r.i64()?;
    }
    if version >= 5 {
        r.i64()?;
    }
    if version >= 8 {
        for _ in 0..r.array_len(compact)? {
            r.i32()?;
            r.string(compact)?;
            r.tagged_if(compact)?;
        }
        r.string(compact)?;
    }
    r.tagged_if(compact)
}

/// One partition of a Fetch response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched<'a> {
    pub topic: Topic<'a>,
    pub partition: i32,
    pub error_code: i16,
    pub records: RecordSet<'a>,
}

/// A Fetch response's partitions and their records (versions 4 and up).
pub fn fetch_response(body: &[u8], version: i16) -> Vec<Fetched<'_>> {
    let compact = flexible(FETCH, version);
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    let _ = fetch_partitions(&mut r, version, compact, &mut out);
    out
}

fn fetch_partitions<'a>(r: &mut Reader<'a>, version: i16, compact: bool, out: &mut Vec<Fetched<'a>>) -> Option<()> {
    r.i32()?; // throttle_time_ms
    if version >= 7 {
        r.i16()?; // error_code
        r.i32()?; // session_id
    }
    for _ in 0..r.array_len(compact)? {
        let topic = topic(r, version >= 13, compact)?;
        for _ in 0..r.array_len(compact)? {
            let partition = r.i32()?;
            let error_code = r.i16()?;
            r.i64()?; // high_watermark
            r.i64()?; // last_stable_offset
            if version >= 5 {
                r.i64()?; // log_start_offset
            }
            for _ in 0..r.array_len(compact)? {
                r.i64()?; // producer_id
                r.i64()?; // first_offset
                r.tagged_if(compact)?;
            }
            if version >= 11 {
                r.i32()?; // preferred_read_replica
            }
            // A response cut by the capture still gives the records before the cut.
            let records = match r.bytes(compact) {
                Some(bytes) => record_batches(bytes.unwrap_or_default()),
                None => {
                    out.push(Fetched { topic, partition, error_code, records: record_batches(r.rest()) });
                    return None;
                }
            };
            out.push(Fetched { topic, partition, error_code, records });
            r.tagged_if(compact)?;
        }
        r.tagged_if(compact)?;
    }
    Some(())
}

/// The topics a Metadata response names with their ids (versions 10 and up carry ids).
pub fn metadata_topic_ids(body: &[u8], version: i16) -> Vec<([u8; 16], String)> {
    let mut out = Vec::new();
    if version >= 10 {
        let _ = metadata_topics(&mut Reader::new(body), version, &mut out);
    }
    out
}

fn metadata_topics(r: &mut Reader<'_>, version: i16, out: &mut Vec<([u8; 16], String)>) -> Option<()> {
    let compact = flexible(METADATA, version);
    r.i32()?; // throttle_time_ms (v3+)
    for _ in 0..r.array_len(compact)? {
        r.i32()?; // node_id
        r.string(compact)?; // host
        r.i32()?; // port
        r.string(compact)?; // rack
        r.tagged_if(compact)?;
    }
    r.string(compact)?; // cluster_id
    r.i32()?; // controller_id
    for _ in 0..r.array_len(compact)? {
        r.i16()?; // error_code
        let name = r.string(compact)?;
        let id = r.uuid()?;
        r.i8()?; // is_internal
        for _ in 0..r.array_len(compact)? {
            r.i16()?; // error_code
            r.i32()?; // partition_index
            r.i32()?; // leader_id
            r.i32()?; // leader_epoch
            for _ in 0..3 {
                // replica_nodes, isr_nodes, offline_replicas
                for _ in 0..r.array_len(compact)? {
                    r.i32()?;
                }
            }
            r.tagged_if(compact)?;
        }
        r.i32()?; // topic_authorized_operations
        r.tagged_if(compact)?;
        if let Some(name) = name.and_then(|n| std::str::from_utf8(n).ok()) {
            out.push((id, name.to_string()));
        }
    }
    Some(())
}
