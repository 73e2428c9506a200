//! HPACK (RFC 7541) header block decoding for one direction of a connection, that keeps going
//! when it does not know the whole dynamic table.
//!
//! Written here rather than taken from a crate because of that last part: a decoder that
//! missed a header block (a capture gap, a connection opened before the agent attached) no
//! longer knows the older entries of the dynamic table, and every decoder we know of then
//! fails the block. This one tracks what it does know: entries inserted since it lost track
//! are at the front of the table and stay there until they are evicted, which happens only
//! when they alone exceed the table's size (older, unknown entries go first). A field that
//! names an unknown entry is `Unknown`; every other field of the block is exact. Huffman
//! strings are decoded by `httlib-huffman`.
//!
//! An entry inserted with a name taken from an unknown entry (an encoder indexing a new value
//! under a name it indexed before: grpc-go's `grpc-timeout`) goes in with its name unknown:
//! its place is what matters. Sizes are counted from what is known, so the count is a lower
//! bound: an entry is evicted only when the peer surely evicted it too, and an entry the peer
//! evicted but we keep sits past the end of the peer's table, where no valid index points.
//!
//! An unknown entry or name can be learned afterwards (`Decoder::learn`): the traced process's
//! own HPACK library decoded the same field, and told the probes what it was. Entries behind
//! the known ones keep their place counted from the newest of them while known entries are
//! inserted in front, and entries in front carry a sequence number, so a learned entry answers
//! every later reference to it.

use rustc_hash::FxHashMap as HashMap;

use std::collections::VecDeque;
use std::sync::Arc;

/// Per RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.
const ENTRY_OVERHEAD: usize = 32;
/// The table size a peer starts with (SETTINGS_HEADER_TABLE_SIZE's default).
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// A table size update above this is refused (a table-size attack): the peer's own setting
/// cannot make us hold more than this per direction.
const MAX_TABLE_SIZE: usize = 64 * 1024;
/// Unknown entries learned at most per direction (a 64 KiB table holds 2048 entries).
const MAX_LEARNED: usize = 2048;
/// Integers longer than this many continuation bytes are malformed.
const MAX_INTEGER_BYTES: usize = 5;
/// Decoded strings longer than this are cut (values we export are short).
const MAX_STRING: usize = 8 * 1024;
/// Huffman strings remembered with their decoding, per direction (see `Decoder::recent`).
const RECENT: usize = 16;
/// Only strings this short are remembered: header values a server repeats are.
const RECENT_MAX_LEN: usize = 64;

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// A name or value: known bytes, or an entry of the table we do not know. Known bytes come
/// from the static table, are shared with a dynamic table entry (naming an entry copies
/// nothing: a busy connection names most fields so), or are a literal of this block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Text {
    Static(&'static [u8]),
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
    Unknown,
}

impl Text {
    pub fn known(&self) -> Option<&[u8]> {
        match self {
            Text::Static(b) => Some(b),
            Text::Shared(b) => Some(b),
            Text::Owned(b) => Some(b),
            Text::Unknown => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Text,
    pub value: Text,
    /// Its place among the block's fields (table size updates are no fields).
    pub position: u16,
    /// It named an entry the decoder does not know: which one, for `Decoder::learn`.
    pub unresolved: Option<Unresolved>,
}

/// An entry a field named that the decoder does not know whole: where it is, while the table
/// is in `epoch`; `whole` when the field is the entry (an indexed field), not just its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unresolved {
    epoch: u32,
    place: Place,
    whole: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The n-th entry behind the known ones (0 the newest of them).
    Older(usize),
    /// The entry of `known` with this sequence number (inserted with an unknown name).
    Known(u64),
}

/// An entry of the part of the table whose places are known: its texts (`Static` or `Shared`;
/// `Unknown` where it came from an unknown entry), and its sequence number.
struct Entry {
    name: Text,
    value: Text,
    seq: u64,
}

/// One header block, decoded: its wanted fields, how many fields it had, and the error that
/// stopped it, if any.
pub struct Decoded {
    pub fields: Vec<Field>,
    pub count: usize,
    pub error: Option<HpackError>,
}

/// Why a block could not be decoded. Either way the table is no longer fully known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// Ends inside a field.
    Truncated,
    /// An index past the table, or an integer too long.
    BadIndex,
    BadHuffman,
    /// A table size update above what we accept.
    TableTooLarge,
}

pub struct Decoder {
    /// Entries inserted since the decoder lost track (all of them when it never did), newest
    /// first: HPACK index 62 is the front.
    known: VecDeque<Entry>,
    /// Their size, counting unknown texts as empty.
    known_size: usize,
    /// The next entry's sequence number.
    next_seq: u64,
    /// The table's maximum size, as the last size update set it.
    max_size: usize,
    /// Entries older than `known` may exist and are unknown.
    lost: bool,
    /// Unknown entries learned since (see `learn`), by place behind the known ones: the name,
    /// and the value too when a field was the whole entry.
    learned: HashMap<usize, (Text, Text)>,
    /// Counts the times the unknown entries' places changed (the known ones were cleared or
    /// evicted): a field's `Unresolved` of another epoch names nothing now.
    epoch: u32,
    /// Times the decoder lost track (a block missed or undecodable).
    pub losses: u64,
    /// The representation `field` decoded last was a table size update (no field).
    last_was_size_update: bool,
    /// Huffman strings decoded lately (raw, decoded): a server sends the same values in
    /// every answer (nginx: `server`, `content-type`, `etag`…, each inserted into the table,
    /// so each must be decoded for its size), and decoding them again and again was a fifth
    /// of the agent's time under h2load.
    recent: VecDeque<HuffmanDecoded>,
}

/// A Huffman string as sent, and its decoding.
type HuffmanDecoded = (Box<[u8]>, Arc<[u8]>);

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            known: VecDeque::new(),
            known_size: 0,
            next_seq: 0,
            max_size: DEFAULT_TABLE_SIZE,
            lost: false,
            learned: HashMap::default(),
            epoch: 0,
            last_was_size_update: false,
            losses: 0,
            recent: VecDeque::new(),
        }
    }

    /// A decoder joining a connection in the middle: entries already in the table are unknown.
    pub fn joined() -> Self {
        Self { lost: true, ..Self::new() }
    }

    /// Whether every entry of the table is known.
    #[cfg(test)]
    pub fn complete(&self) -> bool {
        !self.lost
    }

    /// A header block was not seen (a capture gap): its insertions are unknown.
    pub fn lose(&mut self) {
        self.lost = true;
        self.losses += 1;
    }

    /// Decodes one whole header block (HEADERS plus its CONTINUATIONs). On an error the fields
    /// decoded before it are returned too, and the table is marked as not fully known.
    #[cfg(test)]
    pub fn decode(&mut self, block: &[u8]) -> (Vec<Field>, Option<HpackError>) {
        let d = self.decode_only(block, |_| true);
        (d.fields, d.error)
    }

    /// `decode`, returning only the fields whose name is `wanted`, and those whose name is an
    /// unknown entry. A literal the table does not keep, of a name not wanted, is skipped
    /// without decoding its value: servers send most answer headers so (nginx: `server`,
    /// `date`, `etag`… Huffman-coded, never indexed), and their Huffman decoding was a third
    /// of the agent's time under h2load.
    pub fn decode_only(&mut self, block: &[u8], wanted: fn(&[u8]) -> bool) -> Decoded {
        let mut decoded = Decoded { fields: Vec::new(), count: 0, error: None };
        let mut rest = block;
        while !rest.is_empty() {
            let position = decoded.count.min(usize::from(u16::MAX)) as u16;
            match self.field(&mut rest, wanted, position) {
                Ok(Some(f)) => decoded.fields.push(f),
                Ok(None) => {}
                Err(e) => {
                    self.lose();
                    decoded.error = Some(e);
                    return decoded;
                }
            }
            if !self.last_was_size_update {
                decoded.count += 1;
            }
        }
        decoded
    }

    /// What the process's own HPACK library said a field was, for an unknown entry the field
    /// named (`Field::unresolved`): later references to it resolve. Ignored when the table's
    /// unknown entries moved since (another epoch).
    /// `value` None: the library's value was not copied whole; the name is learned alone.
    pub fn learn(&mut self, at: Unresolved, name: &[u8], value: Option<&[u8]>) {
        if at.epoch != self.epoch {
            return;
        }
        let value = value.filter(|_| at.whole);
        match at.place {
            Place::Older(older) => {
                if !self.lost || self.learned.len() >= MAX_LEARNED {
                    return;
                }
                let value = match value {
                    Some(v) => Text::Shared(v.into()),
                    None => self.learned.get(&older).map_or(Text::Unknown, |(_, v)| v.clone()),
                };
                self.learned.insert(older, (Text::Shared(name.into()), value));
            }
            Place::Known(seq) => {
                let Some(entry) = self.known.iter_mut().find(|e| e.seq == seq) else { return };
                if entry.name.known().is_none() {
                    entry.name = Text::Shared(name.into());
                    self.known_size += name.len();
                }
                if let (None, Some(v)) = (entry.value.known(), value) {
                    entry.value = Text::Shared(v.into());
                    self.known_size += v.len();
                }
                self.evict();
            }
        }
    }

    /// The unknown entries' places changed: what was learned of them names nothing now.
    fn forget_learned(&mut self) {
        self.learned.clear();
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// One representation (RFC 7541 §6); None for a table size update or a field not wanted.
    fn field(&mut self, rest: &mut &[u8], wanted: fn(&[u8]) -> bool, position: u16) -> Result<Option<Field>, HpackError> {
        let first = *rest.first().ok_or(HpackError::Truncated)?;
        self.last_was_size_update = first & 0xe0 == 0x20;
        if first & 0x80 != 0 {
            // Indexed header field.
            let index = integer(rest, 7)?;
            let (name, value, unresolved) = self.entry(index)?;
            let unresolved = unresolved.map(|u| Unresolved { whole: true, ..u });
            return Ok(name.known().is_none_or(wanted).then_some(Field { name, value, position, unresolved }));
        }
        if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            let size = integer(rest, 5)?;
            if size > MAX_TABLE_SIZE {
                return Err(HpackError::TableTooLarge);
            }
            self.max_size = size;
            if size == 0 {
                // Everything is evicted: the table is fully known again.
                self.lost = false;
                self.forget_learned();
            }
            self.evict();
            return Ok(None);
        }
        // Literals: with incremental indexing (01), without (0000) or never indexed (0001).
        let indexing = first & 0xc0 == 0x40;
        let prefix = if indexing { 6 } else { 4 };
        let index = integer(rest, prefix)?;
        let (name, unresolved) = if index == 0 {
            (self.literal(rest, indexing)?, None)
        } else {
            let (name, _, unresolved) = self.entry(index)?;
            (name, unresolved)
        };
        if !indexing && !name.known().is_none_or(wanted) {
            skip_string(rest)?;
            return Ok(None);
        }
        let value = self.literal(rest, indexing)?;
        if indexing {
            self.insert(&name, &value);
        }
        Ok(name.known().is_none_or(wanted).then_some(Field { name, value, position, unresolved }))
    }

    /// A string literal as a `Text`: `Shared` when it goes into the table too (`indexed`) or
    /// was decoded before (`recent`).
    fn literal(&mut self, rest: &mut &[u8], indexed: bool) -> Result<Text, HpackError> {
        let huffman = rest.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
        let raw = raw_string(rest)?;
        if !huffman {
            return Ok(if indexed { Text::Shared(raw.into()) } else { Text::Owned(raw.to_vec()) });
        }
        if let Some((_, decoded)) = self.recent.iter().find(|(r, _)| **r == *raw) {
            return Ok(Text::Shared(decoded.clone()));
        }
        let decoded: Arc<[u8]> = huffman_decode(raw)?.into();
        if raw.len() <= RECENT_MAX_LEN {
            if self.recent.len() == RECENT {
                self.recent.pop_back();
            }
            self.recent.push_front((raw.into(), decoded.clone()));
        }
        Ok(Text::Shared(decoded))
    }

    /// The entry at `index`: its name and value, and where it is when either is unknown.
    fn entry(&self, index: usize) -> Result<(Text, Text, Option<Unresolved>), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex),
            1..=61 => {
                let (n, v) = STATIC_TABLE[index - 1];
                Ok((Text::Static(n.as_bytes()), Text::Static(v.as_bytes()), None))
            }
            _ => match self.known.get(index - 62) {
                Some(e) => {
                    let whole = e.name.known().is_some() && e.value.known().is_some();
                    let at = (!whole).then_some(Unresolved { epoch: self.epoch, place: Place::Known(e.seq), whole: false });
                    Ok((e.name.clone(), e.value.clone(), at))
                }
                None if self.lost => {
                    let older = index - 62 - self.known.len();
                    let at = Unresolved { epoch: self.epoch, place: Place::Older(older), whole: false };
                    Ok(match self.learned.get(&older) {
                        Some((n, v @ Text::Unknown)) => (n.clone(), v.clone(), Some(at)),
                        Some((n, v)) => (n.clone(), v.clone(), None),
                        None => (Text::Unknown, Text::Unknown, Some(at)),
                    })
                }
                None => Err(HpackError::BadIndex),
            },
        }
    }

    fn insert(&mut self, name: &Text, value: &Text) {
        let size = name.known().map_or(0, <[u8]>::len) + value.known().map_or(0, <[u8]>::len) + ENTRY_OVERHEAD;
        if size > self.max_size {
            // Larger than the table: it empties the table (§4.4), known and unknown. (An entry
            // with an unknown name may be too and go in here: it sits where the peer has no
            // entry, and nothing valid names it.)
            self.known.clear();
            self.known_size = 0;
            self.lost = false;
            self.forget_learned();
            return;
        }
        // `field` made known texts `Static` or `Shared`: these clones copy no bytes.
        self.known.push_front(Entry { name: name.clone(), value: value.clone(), seq: self.next_seq });
        self.next_seq += 1;
        self.known_size += size;
        self.evict();
    }

    /// Evicts from the oldest end. Entries behind the known ones are older, so a known entry
    /// goes only when the known ones alone exceed the size.
    fn evict(&mut self) {
        while self.known_size > self.max_size {
            let Some(e) = self.known.pop_back() else { break };
            let len = |t: &Text| t.known().map_or(0, <[u8]>::len);
            self.known_size -= len(&e.name) + len(&e.value) + ENTRY_OVERHEAD;
            // The unknown entries, older, went first.
            if !self.learned.is_empty() {
                self.forget_learned();
            }
        }
        if self.known.is_empty() && self.max_size == 0 {
            self.lost = false;
        }
    }
}

/// An HPACK integer with an `n`-bit prefix (§5.1); consumes it from `rest`.
fn integer(rest: &mut &[u8], n: u8) -> Result<usize, HpackError> {
    let (&first, mut tail) = rest.split_first().ok_or(HpackError::Truncated)?;
    let mask = (1u16 << n) as usize - 1;
    let mut value = first as usize & mask;
    if value == mask {
        let mut shift = 0;
        loop {
            let (&b, t) = tail.split_first().ok_or(HpackError::Truncated)?;
            tail = t;
            value += ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
            if shift >= 7 * MAX_INTEGER_BYTES {
                return Err(HpackError::BadIndex);
            }
        }
    }
    *rest = tail;
    Ok(value)
}

/// Consumes a string literal without decoding it.
fn skip_string(rest: &mut &[u8]) -> Result<(), HpackError> {
    let len = integer(rest, 7)?;
    *rest = rest.get(len..).ok_or(HpackError::Truncated)?;
    Ok(())
}

/// A string literal's bytes as sent (§5.2), cut at `MAX_STRING`; consumes it from `rest`.
fn raw_string<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], HpackError> {
    let len = integer(rest, 7)?;
    if len > rest.len() {
        return Err(HpackError::Truncated);
    }
    let (raw, tail) = rest.split_at(len);
    *rest = tail;
    Ok(&raw[..raw.len().min(MAX_STRING)])
}

fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, HpackError> {
    let mut out = Vec::with_capacity(raw.len() * 8 / 5);
    httlib_huffman::decode(raw, &mut out, httlib_huffman::DecoderSpeed::FiveBits).map_err(|_| HpackError::BadHuffman)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(fields: &[Field]) -> Vec<(String, String)> {
        let text = |t: &Text| t.known().map_or("?".to_string(), |b| String::from_utf8_lossy(b).into_owned());
        fields.iter().map(|f| (text(&f.name), text(&f.value))).collect()
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// Blocks from an independent encoder (loona-hpack), Huffman and dynamic table included.
    #[test]
    fn decodes_what_another_implementation_encodes() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut decoder = Decoder::new();
        let requests: [&[(&str, &str)]; 3] = [
            &[(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"), ("user-agent", "curl/8")],
            &[(":method", "POST"), (":scheme", "https"), (":path", "/helloworld.Greeter/SayHello"), (":authority", "www.example.com"), ("content-type", "application/grpc")],
            &[
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/helloworld.Greeter/SayHello"),
                (":authority", "www.example.com"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ],
        ];
        for request in requests {
            let block = encoder.encode(request.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
            let (fields, error) = decoder.decode(&block);
            assert_eq!(error, None);
            assert_eq!(pairs(&fields), owned(request));
        }
        assert!(decoder.complete());
    }

    /// RFC 7541 C.3: three requests without Huffman, the second and third naming the entries
    /// the first inserted.
    #[test]
    fn rfc7541_appendix_c3() {
        let mut d = Decoder::new();
        let c31 = hex("828684410f7777772e6578616d706c652e636f6d");
        assert_eq!(pairs(&d.decode(&c31).0), owned(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]));
        let c32 = hex("828684be58086e6f2d6361636865");
        assert_eq!(pairs(&d.decode(&c32).0), owned(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"), ("cache-control", "no-cache")]));
        assert_eq!(d.known_size, 110);
    }

    /// After a missed block, entries inserted since are exact and older ones are Unknown; a
    /// decoder never makes a value up.
    #[test]
    fn a_missed_block_leaves_later_insertions_known_and_older_entries_unknown() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut decoder = Decoder::new();
        let first: &[(&[u8], &[u8])] = &[(b":method", b"GET"), (b":path", b"/first"), (b"x-a", b"1")];
        let _missed = encoder.encode(first.iter().copied());
        decoder.lose();
        let second: &[(&[u8], &[u8])] = &[(b":method", b"GET"), (b":path", b"/second"), (b"x-a", b"1")];
        let (fields, error) = decoder.decode(&encoder.encode(second.iter().copied()));
        assert_eq!(error, None);
        // x-a: 1 was inserted by the missed block: unknown; /second is new: known.
        assert_eq!(pairs(&fields), owned(&[(":method", "GET"), (":path", "/second"), ("?", "?")]));
        let (fields, _) = decoder.decode(&encoder.encode(second.iter().copied()));
        assert_eq!(pairs(&fields)[1], (":path".to_string(), "/second".to_string()), "an entry inserted after the loss resolves");
        assert!(!decoder.complete());
    }

    /// What the process's library said of a field that named an unknown entry teaches the
    /// decoder that entry: later references resolve, even after known entries went in front
    /// of it, and so does an entry inserted with that unknown name.
    #[test]
    fn an_unknown_entry_learned_from_the_library_resolves_later_references() {
        let literal = |prefix: u8, value: &str| {
            let mut b = vec![prefix, value.len() as u8];
            b.extend(value.as_bytes());
            b
        };
        let mut decoder = Decoder::new();
        // Missed: POST, then :path and content-type inserted (63 and 62 afterwards).
        let _missed = [vec![0x83], literal(0x44, "/demo.Greeter/Call0"), literal(0x5f, "application/grpc")].concat();
        decoder.lose();
        let d = decoder.decode_only(&[0x83, 0xbf, 0xbe], |_| true);
        assert_eq!((d.count, d.error), (3, None));
        assert_eq!(pairs(&d.fields), owned(&[(":method", "POST"), ("?", "?"), ("?", "?")]));
        let library: [(&[u8], &[u8]); 3] = [(b":method", b"POST"), (b":path", b"/demo.Greeter/Call0"), (b"content-type", b"application/grpc")];
        for f in &d.fields {
            if let Some(at) = f.unresolved {
                let (name, value) = library[usize::from(f.position)];
                decoder.learn(at, name, Some(value));
            }
        }
        // A new entry goes in front of the learned ones (now 63 and 64); they still resolve.
        let call1 = [vec![0x83], literal(0x44, "/demo.Greeter/Call1"), vec![0xbf]].concat();
        assert_eq!(pairs(&decoder.decode(&call1).0), owned(&[(":method", "POST"), (":path", "/demo.Greeter/Call1"), ("content-type", "application/grpc")]));
        assert_eq!(pairs(&decoder.decode(&[0x83, 0xc0, 0xbf]).0), owned(&[(":method", "POST"), (":path", "/demo.Greeter/Call0"), ("content-type", "application/grpc")]));

        // Another connection: a new value indexed under a name only an unknown entry holds
        // (literal with incremental indexing, name 62) goes in front with its name unknown;
        // the old entry moves to 63, and both resolve once learned.
        let mut decoder = Decoder::new();
        decoder.lose();
        let d = decoder.decode_only(&[0xbe, 0x7e, 0x01, b'x'], |_| true);
        assert_eq!(pairs(&d.fields), owned(&[("?", "?"), ("?", "x")]));
        decoder.learn(d.fields[0].unresolved.expect("62 is unknown"), b"x-a", Some(b"1"));
        assert_eq!(pairs(&decoder.decode(&[0xbf]).0), owned(&[("x-a", "1")]), "the old 62 is 63 now");
        let d = decoder.decode_only(&[0xbe], |_| true);
        assert_eq!(pairs(&d.fields), owned(&[("?", "x")]));
        decoder.learn(d.fields[0].unresolved.expect("its name is unknown"), b"x-a", Some(b"x"));
        assert_eq!(pairs(&decoder.decode(&[0xbe, 0xbf]).0), owned(&[("x-a", "x"), ("x-a", "1")]));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut d = Decoder::new();
        assert_eq!(d.decode(&[0xbe]).1, Some(HpackError::BadIndex), "index 62 of an empty table");
        assert_eq!(d.decode(&[0x80]).1, Some(HpackError::BadIndex), "index 0");
        assert_eq!(d.decode(&[0x3f, 0xff, 0xff, 0xff, 0x7f]).1, Some(HpackError::TableTooLarge), "a table-size attack");
        assert_eq!(d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).1, Some(HpackError::BadIndex), "an endless integer");
        assert_eq!(d.decode(&[0x40, 0x05, b'a']).1, Some(HpackError::Truncated));
        assert_eq!(d.decode(&[0x00, 0x81, 0xff, 0x01, b'a']).1, Some(HpackError::BadHuffman));
    }

    #[test]
    fn fields_not_wanted_are_skipped_but_the_table_stays_in_step() {
        let wanted: fn(&[u8]) -> bool = |n| n == b":status";
        let mut d = Decoder::new();
        // :status 200; `server` (static name 54) without indexing, its value a Huffman string
        // that would not decode (skipped, so no error); `x-a: 1` with indexing (kept).
        let mut block = vec![0x88, 0x0f, 0x27, 0x81, 0xff];
        block.extend([0x40, 0x03, b'x', b'-', b'a', 0x01, b'1']);
        let Decoded { fields, error, .. } = d.decode_only(&block, wanted);
        assert_eq!((pairs(&fields), error), (owned(&[(":status", "200")]), None));
        // The indexed literal took index 62: a later block naming it is decoded in step.
        assert_eq!(pairs(&d.decode(&[0xbe]).0), owned(&[("x-a", "1")]));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }
}
