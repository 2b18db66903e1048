//! The chunk framing [`super::HeadScan`] follows on h2c listeners, byte by byte:
//! size lines, the CRLF after chunk data, trailer lines — as strictly as
//! `h1::body_coding` reads them on HTTP/1 listeners (there a line at a time from a
//! buffer; here from whatever bytes hyper's reads bring, keeping no line).

use super::{State, CHUNK_SIZE, NEW_HEAD, TRAILERS};

/// Longest chunk-size line, and longest trailer section (as `h1::body_coding`).
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// What one byte of chunk framing does.
pub(super) enum Step {
    /// Stays in its state (updated in place).
    Same,
    /// Moves on.
    To(State),
    /// The framing broke.
    Break,
}

/// One byte of chunk framing outside chunk data: a size line, the CRLF after data,
/// or a trailer line.
#[inline]
pub(super) fn chunk_byte(state: &mut State, b: u8) -> Step {
    match state {
        State::ChunkSize {
            size,
            len,
            digits_done,
            ext,
            cr,
        } => {
            *len += 1;
            if *len > MAX_CHUNK_LINE {
                return Step::Break;
            }
            chunk_size_byte(size, *len == 1, digits_done, ext, cr, b)
        }
        State::ChunkEnd(seen) => match (*seen, b) {
            (0, b'\r') => {
                *seen = 1;
                Step::Same
            }
            (1, b'\n') => Step::To(CHUNK_SIZE),
            _ => Step::Break,
        },
        State::Trailer {
            len,
            colon,
            cr,
            total,
        } => {
            *total += 1;
            if *total > MAX_TRAILERS {
                return Step::Break;
            }
            trailer_byte(len, colon, cr, b)
        }
        _ => Step::Same,
    }
}

/// One byte of a chunk-size line: hex digits (at most 2^63-1, nginx's limit), then
/// whitespace, an extension after `;` holding no control byte but HTAB, then CRLF
/// (a bare CR or LF anywhere is a break), as `h1::body_coding` parses it.
#[inline]
fn chunk_size_byte(
    size: &mut u64,
    first: bool,
    digits_done: &mut bool,
    ext: &mut bool,
    cr: &mut bool,
    b: u8,
) -> Step {
    if *cr {
        return match b {
            b'\n' if *size == 0 => Step::To(TRAILERS),
            b'\n' => Step::To(State::ChunkData(*size)),
            _ => Step::Break,
        };
    }
    if !*digits_done {
        if let Some(d) = (b as char).to_digit(16) {
            if *size > (i64::MAX as u64) >> 4 {
                return Step::Break;
            }
            *size = *size << 4 | u64::from(d);
            return Step::Same;
        }
        // At least one digit first.
        if first || !matches!(b, b'\r' | b';' | b' ' | b'\t') {
            return Step::Break;
        }
        *digits_done = true;
    }
    match b {
        b'\r' => *cr = true,
        b';' => *ext = true,
        b' ' | b'\t' => {}
        0x21..=0x7e | 0x80..=0xff if *ext => {}
        _ => return Step::Break,
    }
    Step::Same
}

/// One byte of a trailer line: a field name of token bytes, a colon, a value of
/// visible bytes, SP and HTAB, then CRLF; an empty line ends the trailers. No
/// obs-fold, no bare CR or LF.
#[inline]
fn trailer_byte(len: &mut usize, colon: &mut bool, cr: &mut bool, b: u8) -> Step {
    if *cr {
        if b != b'\n' {
            return Step::Break;
        }
        if *len == 0 {
            return Step::To(NEW_HEAD);
        }
        if !*colon {
            return Step::Break;
        }
        (*len, *colon, *cr) = (0, false, false);
        return Step::Same;
    }
    let ok = match b {
        b'\r' => {
            *cr = true;
            true
        }
        b':' if !*colon => {
            *colon = true;
            *len > 0
        }
        _ if !*colon => is_tchar(b),
        b' ' | b'\t' | 0x21..=0x7e | 0x80..=0xff => true,
        _ => false,
    };
    if b != b'\r' {
        *len += 1;
    }
    if ok {
        Step::Same
    } else {
        Step::Break
    }
}

/// RFC 9110 §5.6.2 token bytes.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
