//! Domain values as columns hold them: a job's flags as a bit set, text without U+0000.

use apollo_client::EnrichFlags;

/// The stored form of a job's flags.
pub(crate) fn flags_column(flags: &EnrichFlags) -> i16 {
    i16::from(flags.bits())
}

/// The flags of a stored bit set.
pub(crate) fn flags_of(flags: i16) -> EnrichFlags {
    EnrichFlags::from_bits(u8::try_from(flags).unwrap_or(0))
}

/// Text as a column can hold it (U+0000 replaced).
pub(crate) fn storable_text(s: Option<String>) -> Option<String> {
    s.map(|s| if s.contains('\0') { s.replace('\0', "\u{fffd}") } else { s })
}
