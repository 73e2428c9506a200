//! Safe decoding of ring-buffer records on the agent side.

use crate::*;

/// A decoded record borrowing the ring buffer bytes.
pub enum Record<'a> {
    ConnOpen(ConnOpenEvent),
    Data(DataHeader, &'a [u8]),
    /// A datagram: the data record's fixed part, its peer, its payload.
    Datagram(DataHeader, SockAddr, &'a [u8]),
    Close(CloseEvent),
    Inherit(InheritEvent),
    Process(ProcessEvent),
    TlsSocket(TlsSocketEvent),
    UnitSpawn(UnitSpawnEvent),
    HandOff(HandOffEvent),
    StreamCaller(StreamCallerEvent),
    HeaderField(HeaderFieldEvent),
    Exit(ExitEvent),
}

/// Why a record could not be decoded (a probe/agent version mismatch, never traffic).
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short {
        kind: u16,
        len: usize,
    },
    UnknownKind(u16),
    /// Written by probes of another record format.
    Version(u16),
}

fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above; T is a plain-old-data #[repr(C)] struct with no
    // invalid bit patterns, and read_unaligned does not require alignment.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The payload of `captured` bytes that follows a fixed part of `fixed` bytes.
fn payload(bytes: &[u8], fixed: usize, captured: u32, kind: u16) -> Result<&[u8], DecodeError> {
    let end = fixed.saturating_add(captured as usize);
    bytes.get(fixed..end).ok_or(DecodeError::Short { kind, len: bytes.len() })
}

pub fn record(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    let header = read::<RecordHeader>(bytes).ok_or(DecodeError::Short { kind: 0, len: bytes.len() })?;
    if header.version != FORMAT_VERSION {
        return Err(DecodeError::Version(header.version));
    }
    let kind = header.kind;
    let short = DecodeError::Short { kind, len: bytes.len() };
    match kind {
        kind::CONN_OPEN => read(bytes).map(Record::ConnOpen).ok_or(short),
        kind::CLOSE => read(bytes).map(Record::Close).ok_or(short),
        kind::INHERIT => read(bytes).map(Record::Inherit).ok_or(short),
        kind::PROCESS => read(bytes).map(Record::Process).ok_or(short),
        kind::TLS_SOCKET => read(bytes).map(Record::TlsSocket).ok_or(short),
        kind::UNIT_SPAWN => read(bytes).map(Record::UnitSpawn).ok_or(short),
        kind::HAND_OFF => read(bytes).map(Record::HandOff).ok_or(short),
        kind::STREAM_CALLER => read(bytes).map(Record::StreamCaller).ok_or(short),
        kind::HEADER_FIELD => read(bytes).map(Record::HeaderField).ok_or(short),
        kind::EXIT => read(bytes).map(Record::Exit).ok_or(short),
        kind::DATA => {
            let data: DataHeader = read(bytes).ok_or(short)?;
            Ok(Record::Data(data, payload(bytes, size_of::<DataHeader>(), data.captured, kind)?))
        }
        kind::DATAGRAM => {
            let d: DatagramHeader = read(bytes).ok_or(short)?;
            Ok(Record::Datagram(d.data, d.peer, payload(bytes, size_of::<DatagramHeader>(), d.data.captured, kind)?))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}
