//! Bounds on what a peer may make us hold. Every length a peer announces is
//! checked against these before anything is allocated for it.

/// Limits applied while decoding. Defaults follow Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string accepted (`proto-max-bulk-len`, 512 MiB).
    pub bulk_len_max: usize,
    /// Largest number of elements in one request or aggregate (1 Mi).
    pub multibulk_len_max: usize,
    /// Longest inline command line or length header (64 KiB, Redis's
    /// `PROTO_INLINE_MAX_SIZE`).
    pub inline_len_max: usize,
    /// Deepest nesting of aggregates in a reply frame.
    pub nesting_max: usize,
}

impl Limits {
    /// Limits for a connection that has not authenticated yet while a
    /// password is required: Redis allows such clients 10 arguments of at
    /// most 16 KiB, enough for AUTH and HELLO and nothing that costs memory.
    pub const UNAUTHENTICATED_MULTIBULK_MAX: usize = 10;
    /// See [`Limits::UNAUTHENTICATED_MULTIBULK_MAX`].
    pub const UNAUTHENTICATED_BULK_MAX: usize = 16 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bulk_len_max: 512 * 1024 * 1024,
            multibulk_len_max: 1024 * 1024,
            inline_len_max: 64 * 1024,
            nesting_max: 128,
        }
    }
}
