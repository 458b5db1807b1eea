//! Frames as the client receives them.

use link_types::Backing;

/// Flags of an access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FrameFlags(pub u8);

impl FrameFlags {
    /// No flags.
    pub const NONE: FrameFlags = FrameFlags(0);
    /// The frame can be decoded on its own (an IDR / keyframe).
    pub const KEYFRAME: FrameFlags = FrameFlags(1);

    /// Whether the keyframe flag is set.
    pub fn is_keyframe(self) -> bool {
        self.0 & 1 != 0
    }
}

#[derive(Debug)]
enum Data {
    Owned(Vec<u8>),
    Shared {
        backing: Backing,
        start: usize,
        len: usize,
    },
}

/// One whole frame.
#[derive(Debug)]
pub struct Frame {
    /// Frame index (consecutive from 0 on the host).
    pub index: u32,
    /// Presentation time in microseconds, as the host gave it.
    pub pts: u64,
    /// Flags, as the host gave them.
    pub flags: FrameFlags,
    /// Whether parity rebuilt part of it.
    pub recovered: bool,
    data: Data,
}

impl Frame {
    pub(crate) fn owned(index: u32, pts: u64, flags: u8, data: Vec<u8>, recovered: bool) -> Frame {
        Frame {
            index,
            pts,
            flags: FrameFlags(flags),
            recovered,
            data: Data::Owned(data),
        }
    }

    pub(crate) fn shared(
        index: u32,
        pts: u64,
        flags: u8,
        backing: Backing,
        start: usize,
        len: usize,
    ) -> Frame {
        Frame {
            index,
            pts,
            flags: FrameFlags(flags),
            recovered: false,
            data: Data::Shared {
                backing,
                start,
                len,
            },
        }
    }

    /// The frame's bytes.
    pub fn data(&self) -> &[u8] {
        match &self.data {
            Data::Owned(v) => v,
            Data::Shared {
                backing,
                start,
                len,
            } => &backing.as_slice()[*start..*start + *len],
        }
    }

    /// Whether the bytes are still the link's received buffer (no copy was
    /// made on the way; on shared memory, the slot the producer wrote).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.data, Data::Shared { .. })
    }

    /// The bytes as an owned vector (copies when zero-copy).
    pub fn into_vec(self) -> Vec<u8> {
        match self.data {
            Data::Owned(v) => v,
            Data::Shared { .. } => self.data().to_vec(),
        }
    }
}

/// What the client's [`next_frame`](crate::Client::next_frame) yields.
#[derive(Debug)]
pub enum ClientEvent {
    /// A whole frame, in index order.
    Frame(Frame),
    /// Frames `first .. first + count` will never arrive (request a keyframe;
    /// the host was told already).
    Lost {
        /// First lost frame.
        first: u32,
        /// How many consecutive frames.
        count: u32,
    },
}
