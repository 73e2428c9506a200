//! The body half of a length-prefixed framer (PostgreSQL messages, MySQL packets): a body is
//! counted across segments, its first bytes are kept, and a capture gap is skipped when it
//! falls inside the body. A gap that crosses the body's end loses the framing: where the next
//! header starts was not captured.

/// Progress of the body being counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes of this body are to come.
    Inside,
    /// The body's last byte has been seen.
    Complete,
    /// A gap crossed the body's end: the framing is lost.
    Lost,
}

#[derive(Default)]
pub struct CountedBody {
    remaining: u64,
    keep: usize,
    kept: Vec<u8>,
}

impl CountedBody {
    /// Starts a body of `len` bytes, of which the first `keep` are kept.
    pub fn start(&mut self, len: u64, keep: usize) -> Progress {
        self.remaining = len;
        self.keep = keep;
        self.kept.clear();
        if len == 0 { Progress::Complete } else { Progress::Inside }
    }

    /// Takes this body's bytes from the front of `data`; returns what follows it.
    pub fn take<'a>(&mut self, data: &'a [u8]) -> (&'a [u8], Progress) {
        let n = (data.len() as u64).min(self.remaining) as usize;
        let room = self.keep.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..n.min(room)]);
        self.remaining -= n as u64;
        (&data[n..], if self.remaining == 0 { Progress::Complete } else { Progress::Inside })
    }

    /// Bytes moved after the captured ones but not captured.
    pub fn skip_gap(&mut self, gap: u64) -> Progress {
        if gap > self.remaining {
            return Progress::Lost;
        }
        self.remaining -= gap;
        if self.remaining == 0 { Progress::Complete } else { Progress::Inside }
    }

    /// The kept bytes of the finished body.
    pub fn take_kept(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.kept)
    }
}
